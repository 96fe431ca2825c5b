"""`plan`: what each VM needs so that the hypervisors hold what the machines ask for (pure).

Desired state (machines.json, the current build's base, the identity files, the domain XML define
would write) and observed state (what a hypervisor has, gathered by ops/observe.py) go in; per VM a
list of actions comes out, plus the orphans: domains with ivm's metadata in ivm's pool whose
machine is gone. Nothing here touches the world, so the same function plans for `plan` and, under
each VM's lock, for `apply`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

from lxml import etree

from ivm.ops.define import differences
from ivm.volumes import vm_volumes


class Action(StrEnum):
    """What `apply` does to a VM, in the order it does it."""

    CREATE = "create"  # make the missing disks (overlay, identity, var)
    IMPORT_BASE = "import-base"  # upload the current build's base into the pool
    DEFINE = "define"  # define the domain (it has none)
    UPGRADE = "upgrade"  # move to the current build's base (fresh overlay, identity, redefine)
    IDENTITY = "identity"  # rebuild the identity disk from machines/NAME/
    REDEFINE = "redefine"  # the definition differs from what the machine asks for
    START = "start"  # a new VM, or one an interrupted upgrade owes a start


class PlanExit(IntEnum):
    """`plan`'s exit codes; 2 stays "invalid input", as for every command."""

    NO_CHANGES = 0
    FAILED = 1
    CHANGES = 3


# Actions that need a running VM to restart to take effect.
RESTARTING = frozenset({Action.UPGRADE, Action.IDENTITY, Action.REDEFINE})


@dataclass(frozen=True)
class Desired:
    name: str
    uri: str
    base: str | None  # the current build's base hash; None when unknown (no Nix and no --image)
    identity_digest: str | None  # None: files still to generate (create does)
    domain_xml: str | None  # what define would write for the base the VM ends up on; None before create
    resign: str | None = None  # why the host certificate is to be signed again (--host-ca)


@dataclass(frozen=True)
class Observed:
    name: str
    volumes: frozenset[str]  # the VM's volumes present (boot only with a complete base under it)
    boot_base: str | None  # the base its overlay is on
    identity_digest: str | None  # from the identity disk's superblock
    domain_xml: str | None  # the persistent definition; None when not defined
    running: bool
    restart_pending: bool  # an interrupted run owes it a start (or, running, a restart)
    pool_bases: frozenset[str]  # base hashes complete in the pool


@dataclass(frozen=True)
class Orphan:
    """A domain ivm defined in this pool whose machine is no longer in machines.json."""

    name: str
    uri: str
    machine: str
    running: bool

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "uri": self.uri, "machine": self.machine, "running": self.running}


@dataclass(frozen=True)
class VmPlan:
    name: str
    uri: str
    actions: tuple[Action, ...] = ()
    details: tuple[str, ...] = ()
    restart: bool = False  # apply restarts the running VM
    error: str | None = None  # could not be planned (hypervisor unreachable, bad identity file)

    def line(self) -> str:
        if self.error:
            return f"{self.name}: error: {self.error}"
        if not self.actions:
            return f"{self.name}: no changes"
        tail = " (restarts it)" if self.restart else ""
        why = f": {'; '.join(self.details)}" if self.details else ""
        return f"{self.name}: {', '.join(self.actions)}{tail}{why}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uri": self.uri,
            "actions": [str(a) for a in self.actions],
            "details": list(self.details),
            "restart": self.restart,
            "error": self.error,
        }


@dataclass(frozen=True)
class FleetPlan:
    vms: tuple[VmPlan, ...]
    orphans: tuple[Orphan, ...] = ()

    @property
    def changes(self) -> int:
        return sum(bool(v.actions) for v in self.vms)

    @property
    def errors(self) -> int:
        return sum(v.error is not None for v in self.vms)

    def exit_code(self) -> PlanExit:
        if self.errors:
            return PlanExit.FAILED
        return PlanExit.CHANGES if self.changes else PlanExit.NO_CHANGES

    def summary(self) -> str:
        unchanged = len(self.vms) - self.changes - self.errors
        return (
            f"{self.changes} to change, {unchanged} unchanged, {self.errors} failed to plan, "
            f"{len(self.orphans)} orphaned"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "vms": [v.as_json() for v in self.vms],
            "orphans": [o.as_json() for o in self.orphans],
            "changes": self.changes,
            "errors": self.errors,
        }


def plan_vm(d: Desired, o: Observed) -> VmPlan:
    """The actions that take VM `o` to `d`, in the order apply carries them out."""
    vols = vm_volumes(d.name)
    actions: set[Action] = set()
    details: list[str] = []
    created = o.boot_base is not None and {vols.var, vols.identity} <= o.volumes
    if not created:
        actions.add(Action.CREATE)
        missing = [v for v in vols.all() if v not in o.volumes or (v == vols.boot and o.boot_base is None)]
        details.append("missing: " + ", ".join(missing))
        if d.base is not None and d.base not in o.pool_bases:
            actions.add(Action.IMPORT_BASE)
        if o.domain_xml is None:
            actions |= {Action.DEFINE, Action.START}
        return _plan(d, actions, details, restart=False)
    target = d.base or o.boot_base
    if target != o.boot_base:
        actions.add(Action.UPGRADE)
        details.append(f"base {str(o.boot_base)[:12]} -> {str(target)[:12]}")
        if target not in o.pool_bases:
            actions.add(Action.IMPORT_BASE)
    if d.identity_digest != o.identity_digest or d.resign is not None:
        actions.add(Action.IDENTITY)
        changed = d.identity_digest != o.identity_digest
        details.append("identity files changed" if changed else f"host certificate to sign again: {d.resign}")
    if o.domain_xml is None:
        actions |= {Action.DEFINE, Action.START}
    else:
        if d.domain_xml is not None:
            diffs = differences(
                etree.fromstring(d.domain_xml.encode()), etree.fromstring(o.domain_xml.encode())
            )
            if Action.UPGRADE in actions:  # the upgrade rewrites the metadata itself
                diffs = tuple(x for x in diffs if x != "ivm metadata differs")
            if diffs:
                actions.add(Action.REDEFINE)
                details += diffs
        if o.restart_pending:
            _owed(o, actions, details)
    return _plan(d, actions, details, restart=o.running and bool(actions & RESTARTING))


def _owed(o: Observed, actions: set[Action], details: list[str]) -> None:
    """What an interrupted run left owed to a VM marked restart-pending."""
    if not o.running:
        actions.add(Action.START)
        details.append("an interrupted run owes it a start")
    elif not actions & RESTARTING:
        # Killed between writing a definition and restarting into it: the VM still runs the old one.
        actions.add(Action.REDEFINE)
        details.append("an interrupted run owes it a restart into its definition")


def _plan(d: Desired, actions: set[Action], details: list[str], restart: bool) -> VmPlan:
    ordered = tuple(a for a in Action if a in actions)
    return VmPlan(d.name, d.uri, ordered, tuple(details), restart)


def plan_fleet(pairs: list[tuple[Desired, Observed] | VmPlan], orphans: list[Orphan]) -> FleetPlan:
    """Plans for every VM (a VmPlan already there is one that failed to observe), sorted by name."""
    plans = [p if isinstance(p, VmPlan) else plan_vm(*p) for p in pairs]
    return FleetPlan(
        tuple(sorted(plans, key=lambda v: v.name)), tuple(sorted(orphans, key=lambda o: (o.uri, o.name)))
    )
