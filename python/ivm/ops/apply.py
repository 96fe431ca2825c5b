"""`apply`: carry out each VM's plan, re-planned under the VM's lock.

Planning again under the lock makes two `apply` runs at once safe (the second finds the work done,
or the VM busy) and a killed run finishable (its re-run plans what is left). A VM whose plan is
empty is not touched, so a VM whose definition, base and identity are unchanged is never restarted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ivm.config import Settings
from ivm.disks import ProgressFactory, import_base
from ivm.errors import ToolError
from ivm.failpoints import failpoint
from ivm.hypervisor.domains import State, require, set_restart_pending
from ivm.lock import resource_lock
from ivm.ops import power
from ivm.ops.define import define
from ivm.ops.destroy import destroy_vm
from ivm.ops.gc import hypervisor_uris
from ivm.ops.observe import observe_vm, orphans, pool_bases, select
from ivm.ops.plan import Action, plan_vm
from ivm.ops.provision import certify_host_key, create
from ivm.ops.session import VmSession, open_hypervisor
from ivm.ops.status import current_bases
from ivm.ops.upgrade import Builds, move_to_base
from ivm.ops.workers import Outcome, for_each_vm

log = logging.getLogger("ivm.apply")


@dataclass(frozen=True)
class ApplyResult:
    name: str
    done: tuple[Action, ...]
    restarted: bool

    def line(self) -> str:
        if not self.done:
            return f"{self.name}: no changes"
        return f"{self.name}: {', '.join(self.done)}{', restarted' if self.restarted else ''}"


@dataclass(frozen=True)
class ApplyOptions:
    image: Path | None
    force: bool
    timeout: float
    progress: ProgressFactory | None = None


def apply_fleet(
    settings: Settings,
    names: Sequence[str],
    all_vms: bool,
    opts: ApplyOptions,
    *,
    jobs: int,
    evaluate: bool,
    report: Callable[[Outcome[ApplyResult]], None],
) -> list[Outcome[ApplyResult]]:
    """Apply the plan of every wanted VM, up to `jobs` at a time."""
    wanted = select(settings, names, all_vms)
    current = current_bases(settings, wanted, opts.image, evaluate)
    builds = Builds(opts.image)
    return for_each_vm(
        settings, wanted, lambda s: apply_vm(s, current.get(s.name), builds, opts), jobs=jobs, report=report
    )


def prune_orphans(settings: Settings, *, force: bool, report: Callable[[str], None]) -> int:
    """Destroy every orphan (`plan --all` lists them): undefine, delete its boot and identity disks,
    keep its var disk. The number that failed."""
    failed = 0
    for uri in hypervisor_uris(settings):
        try:
            with open_hypervisor(settings, uri) as hv:
                for o in orphans(hv, settings):
                    try:
                        with resource_lock(uri, o.name):
                            r = destroy_vm(hv, o.name, delete_data=False, force=force)
                    except ToolError as e:
                        failed += 1
                        report(f"{o.name}: failed: {e}")
                        continue
                    kept = f", kept its data on {r.kept_var}" if r.kept_var else ""
                    report(f"{o.name}: orphan destroyed{kept}")
        except ToolError as e:
            failed += 1
            report(f"{uri}: failed: {e}")
    return failed


def apply_vm(s: VmSession, current: str | None, builds: Builds, opts: ApplyOptions) -> ApplyResult:
    """Plan VM `s` afresh (its lock is held) and carry the plan out."""
    certify_host_key(s)  # with a host CA: signed first, so the plan below ships the new certificate
    desired, observed = observe_vm(s, current, pool_bases(s.hv))
    plan = plan_vm(desired, observed)
    todo = set(plan.actions)
    if not todo:
        return ApplyResult(s.name, (), False)
    restarted = False
    if Action.CREATE in todo:
        create(s, opts.image, opts.progress)
        failpoint("apply:created")
    if Action.DEFINE in todo or Action.CREATE in todo:
        define(s)  # first: an upgrade or identity rebuild below needs the domain
        if Action.START in todo:  # owed a start: a re-run after a crash still starts it
            set_restart_pending(require(s.domain(), s.name), True)
        failpoint("apply:defined")
    if Action.UPGRADE in todo or (Action.IDENTITY in todo and Action.CREATE not in todo):
        built = builds.get(s) if Action.UPGRADE in todo else None
        if built is not None:
            import_base(s.hv, built, opts.progress)
        target = built.hash if built is not None else str(observed.boot_base)
        result = move_to_base(s, target, force=opts.force, timeout=opts.timeout)
        restarted = result.restarted
    elif Action.REDEFINE in todo:
        restarted = _redefine(s, running=observed.running, force=opts.force, timeout=opts.timeout)
    if Action.START in todo:
        power.start(s)
    return ApplyResult(s.name, plan.actions, restarted)


def _redefine(s: VmSession, *, running: bool, force: bool, timeout: float) -> bool:
    """Write the new definition; a running VM is restarted so that it takes effect."""
    if not running:
        define(s)
        return False
    dom = require(s.domain(), s.name)
    set_restart_pending(dom, True)
    define(s)
    dom = require(s.domain(), s.name)
    set_restart_pending(dom, True)  # the new definition replaced the metadata that held it
    failpoint("apply:redefined")
    if not s.hv.domains.shutdown(dom, timeout):
        if not force:
            set_restart_pending(dom, False)
            raise ToolError(
                f"{s.name} did not shut down within {timeout:g} s; its new definition waits for "
                "its next boot",
                "pass --force to power it off, or a longer --timeout",
            )
        s.hv.domains.power_off(dom)
    failpoint("apply:stopped")
    if s.hv.domains.state(dom) is State.SHUT_OFF:
        s.hv.domains.start(dom)
    set_restart_pending(dom, False)
    return True
