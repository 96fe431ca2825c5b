"""`upgrade` and `rollback`: move a VM to another base and rebuild its identity disk, keeping /var.

Per VM: shut down (graceful; forced only with --force), recreate the boot overlay on the new base
(a fresh overlay, never a re-pointed one: `qemu-img rebase -u` on an overlay with writes corrupts
it), rebuild the identity disk from machines/<name>/, redefine (the metadata keeps the previous
base for rollback), start again if it was running. The var disk is never touched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ivm.config import Settings
from ivm.disks import HEADER, ProgressFactory, identity_digest, import_base, make_overlay, write_identity_disk
from ivm.domain_xml import read_metadata
from ivm.errors import ToolError
from ivm.failpoints import failpoint
from ivm.hypervisor.domains import (
    State,
    health_pending,
    require,
    restart_pending,
    set_health_pending,
    set_restart_pending,
)
from ivm.hypervisor.handles import DomainHandle
from ivm.image import BaseImage
from ivm.names import check_vm_name
from ivm.ops import snapshots as var_snapshots
from ivm.ops.define import created_base, define
from ivm.ops.health import wait_healthy
from ivm.ops.provision import certify_host_key, resolve_image, vm_identity
from ivm.ops.session import VmSession
from ivm.ops.workers import Outcome, for_each_vm
from ivm.volumes import base_volume

log = logging.getLogger("ivm.upgrade")


@dataclass(frozen=True)
class UpgradeResult:
    name: str
    old_base: str
    new_base: str
    changed: bool
    identity_rebuilt: bool
    restarted: bool
    downtime_s: float | None  # from shutdown complete to start issued
    rolled_back: str | None = None  # why the new base was judged unhealthy; back on old_base

    def line(self) -> str:
        if self.rolled_back:
            return (
                f"{self.name}: rolled back: {self.rolled_back} on base {self.new_base[:12]}; "
                f"running on base {self.old_base[:12]} again"
            )
        if not self.changed:
            return f"{self.name}: up to date on base {self.new_base[:12]}"
        what = (
            f"base {self.old_base[:12]} -> {self.new_base[:12]}"
            if self.old_base != self.new_base
            else f"identity rebuilt on base {self.new_base[:12]}"
        )
        tail = f", restarted after {self.downtime_s:.2f} s down" if self.downtime_s is not None else ""
        return f"{self.name}: {what}{tail}"


def move_to_base(
    s: VmSession, target: str, *, force: bool, timeout: float, keep: int = 0, gate: bool = False
) -> UpgradeResult:
    """Put VM `s` on base `target` (already in the pool) with a fresh identity disk; with `keep`,
    snapshot /var first (named after the base it ran) and keep the newest `keep` snapshots."""
    certify_host_key(s)  # with a host CA: a missing, stale or expiring certificate is signed anew
    identity = vm_identity(s, generate=False)  # a bad identity file stops here, before any change
    dom = require(s.domain(), s.name)
    # A run killed between dropping the old overlay or identity disk and making the new one: finish it.
    if s.hv.storage.volume(s.volumes.boot) is None:
        make_overlay(s.hv, s.volumes.boot, target)
    if s.hv.storage.volume(s.volumes.identity) is None:
        write_identity_disk(s.hv, s.volumes.identity, identity)
    current = created_base(s)
    hv, vols = s.hv, s.volumes
    meta = read_metadata(hv.domains.xml(dom))
    disk_digest = identity_digest(hv.storage.head(vols.identity, HEADER))
    pending = restart_pending(dom)
    identity_stale = disk_digest != identity.digest
    if current == target and not identity_stale and meta is not None and meta.base == target and not pending:
        return UpgradeResult(s.name, current, target, False, False, False, None)

    was_running = pending or hv.domains.state(dom) is not State.SHUT_OFF
    _stop(s, dom, force=force, timeout=timeout)
    stopped_at = time.monotonic()
    failpoint("upgrade:stopped")
    if keep and current != target:
        var_snapshots.take(s, dom, current)
        failpoint("upgrade:snapshotted")
        var_snapshots.prune(s, dom, keep)
    if current != target:
        make_overlay(hv, vols.boot, target)
        failpoint("upgrade:overlay-made")
    if identity_stale or current != target:
        write_identity_disk(hv, vols.identity, identity)
        failpoint("upgrade:identity-made")
    define(s, base_hash=target)
    failpoint("upgrade:defined")
    dom = require(s.domain(), s.name)
    downtime = None
    if was_running:
        set_restart_pending(dom, True)  # a new definition replaced the metadata that held it
        if gate and current != target:
            set_health_pending(dom, True)  # judged by the caller, or by a re-run if this one dies
        hv.domains.start(dom)
        downtime = time.monotonic() - stopped_at
    set_restart_pending(dom, False)
    return UpgradeResult(s.name, current, target, True, identity_stale, was_running, downtime)


def _stop(s: VmSession, dom: DomainHandle, *, force: bool, timeout: float) -> None:
    """Shut the VM down, recording first that it is owed a start."""
    if s.hv.domains.state(dom) is State.SHUT_OFF:
        return
    set_restart_pending(dom, True)
    if not s.hv.domains.shutdown(dom, timeout):
        if not force:
            set_restart_pending(dom, False)
            raise ToolError(
                f"{s.name} did not shut down within {timeout:g} s; nothing was changed",
                "pass --force to power it off, or a longer --timeout",
            )
        log.info("%s: powering off after %g s", s.name, timeout)
        s.hv.domains.power_off(dom)


def rollback_with_data(
    s: VmSession, snapshot: str | None, *, force: bool, timeout: float
) -> tuple[UpgradeResult, str, str]:
    """`rollback --with-data`: the previous base, and /var as the chosen snapshot (default: the newest
    taken on that base) holds it. Returns the result, the snapshot restored and the snapshot that
    saved the /var it replaced."""
    _catch_up_definition(s)
    target = previous_base(s)
    dom = require(s.domain(), s.name)
    chosen = var_snapshots.choose(s, dom, snapshot, target)  # a bad name stops here, nothing changed
    current = created_base(s)
    was_running = restart_pending(dom) or s.hv.domains.state(dom) is not State.SHUT_OFF
    _stop(s, dom, force=force, timeout=timeout)
    definition = s.hv.domains.xml(dom)
    saved = var_snapshots.restore(s, dom, chosen, current)
    failpoint("rollback:restored")
    # Reverting also brought back the definition the snapshot was taken with; put today's back
    # (its metadata names the base to roll back from), with the restart it is owed.
    dom = s.hv.domains.define(definition, s.name)
    set_restart_pending(dom, was_running)
    return move_to_base(s, target, force=force, timeout=timeout), chosen.name, saved


def _catch_up_definition(s: VmSession) -> None:
    """A definition naming another base than the boot overlay's was left by a killed run: an upgrade
    between its new overlay and its define, or a rollback --with-data between reverting /var (which
    also reverted the definition) and putting today's back. Define the VM on the base its disks are
    on, keeping the base its definition named as the previous one, so the rollback goes back to it."""
    dom = require(s.domain(), s.name)
    meta = read_metadata(s.hv.domains.xml(dom))
    on = created_base(s)
    if meta is None or meta.base == on:
        return
    log.info(
        "%s: its definition names base %s, its disks base %s: redefining", s.name, meta.base[:12], on[:12]
    )
    pending = restart_pending(dom)
    define(s, base_hash=on)
    if pending:  # the new definition dropped the mark
        set_restart_pending(require(s.domain(), s.name), True)


def previous_base(s: VmSession) -> str:
    dom = require(s.domain(), s.name)
    meta = read_metadata(s.hv.domains.xml(dom))
    if meta is None or not meta.previous_base:
        raise ToolError(f"{s.name} has no previous base to roll back to", "it has never been upgraded")
    if s.hv.storage.volume(base_volume(meta.previous_base)) is None:
        raise ToolError(
            f"the previous base of {s.name} ({meta.previous_base[:12]}) is no longer in the pool",
            "upgrade to a build of the old configuration instead (ivm upgrade --image PATH)",
        )
    return meta.previous_base


@dataclass(frozen=True)
class Rollout:
    """How a fleet upgrade proceeds: --jobs at a time, --canary VMs first, each restarted VM judged
    healthy within --health-timeout (0: not judged), the run stopped at --max-failures rollbacks."""

    jobs: int = 1
    canary: int = 0
    max_failures: int = 1
    health_timeout: float = 0
    keep: int = 0  # /var snapshots kept per VM; 0 takes none

    def waves(self, names: Sequence[str]) -> list[list[str]]:
        if not self.canary and not self.health_timeout:
            return [list(names)] if names else []
        head = list(names[: self.canary])
        rest = list(names[self.canary :])
        return ([head] if head else []) + [rest[i : i + self.jobs] for i in range(0, len(rest), self.jobs)]


@dataclass(frozen=True)
class FleetResult:
    results: tuple[UpgradeResult, ...]
    failures: tuple[tuple[str, str], ...]  # (name, one-line error)
    skipped: tuple[str, ...]  # --all: machines that were never created
    not_started: tuple[str, ...] = ()  # left alone: the run stopped after --max-failures rollbacks

    @property
    def rolled_back(self) -> int:
        return sum(r.rolled_back is not None for r in self.results)

    def summary(self) -> str:
        changed = sum(r.changed and not r.rolled_back for r in self.results)
        up_to_date = sum(not r.changed for r in self.results)
        text = (
            f"{changed} upgraded, {up_to_date} up to date, "
            f"{len(self.failures)} failed, {len(self.skipped)} not created"
        )
        if self.rolled_back or self.not_started:
            text += f", {self.rolled_back} rolled back, {len(self.not_started)} not started"
        return text


def upgrade_fleet(
    settings: Settings,
    names: Sequence[str],
    *,
    all_created: bool,
    image: Path | None,
    force: bool,
    timeout: float,
    report: Callable[[str], None],
    progress: ProgressFactory | None = None,
    rollout: Rollout = Rollout(),
) -> FleetResult:
    """Upgrade each VM under its own lock, in waves (see Rollout). One VM's error does not stop the
    rest; a VM that restarts unhealthy is put back on its previous base, and --max-failures of
    those stop the run before the next wave."""
    wanted = [check_vm_name(n) for n in names] or sorted(settings.machines)
    for n in wanted:
        settings.machine(n)  # unknown names are usage errors before anything changes
    builds = Builds(image)
    skipped: list[str] = []

    def one(s: VmSession) -> UpgradeResult | None:
        if all_created and s.hv.storage.volume(s.volumes.boot) is None:
            skipped.append(s.name)
            return None
        built = builds.get(s)
        import_base(s.hv, built, progress if rollout.jobs == 1 else None)
        gate = bool(rollout.health_timeout)
        result = move_to_base(s, built.hash, force=force, timeout=timeout, keep=rollout.keep, gate=gate)
        dom = require(s.domain(), s.name)
        if not (gate and health_pending(dom)):
            return result
        failpoint("upgrade:restarted")
        health = wait_healthy(s, rollout.health_timeout)
        if health.ok:
            set_health_pending(dom, False)
            return result
        back = previous_base(s)
        log.info("%s: %s; rolling back to base %s", s.name, health.why, back[:12])
        failpoint("upgrade:unhealthy")
        # The unhealthy guest may ignore the power button: it is powered off after --timeout.
        move_to_base(s, back, force=True, timeout=timeout)  # its new definition drops the mark
        return replace(result, old_base=back, changed=True, rolled_back=health.why)

    def said(o: Outcome[UpgradeResult | None]) -> None:
        if o.error is not None:
            report(f"{o.name}: failed: {o.error}")
        elif o.result is not None:
            report(o.result.line())

    outcomes: list[Outcome[UpgradeResult | None]] = []
    waves = rollout.waves(wanted)
    not_started: list[str] = []
    for i, wave in enumerate(waves):
        outcomes += for_each_vm(settings, wave, one, jobs=rollout.jobs, report=said)
        rolled = sum(bool(o.result and o.result.rolled_back) for o in outcomes)
        if rolled >= rollout.max_failures and i + 1 < len(waves):
            not_started = [n for w in waves[i + 1 :] for n in w]
            report(
                f"stopping: {rolled} VM(s) rolled back (--max-failures {rollout.max_failures}); "
                f"not started: {', '.join(not_started)}"
            )
            break
    return FleetResult(
        tuple(o.result for o in outcomes if o.result is not None),
        tuple((o.name, o.error) for o in outcomes if o.error is not None),
        tuple(n for n in wanted if n in skipped),
        tuple(not_started),
    )


class Builds:
    """One build (or its failure) per image for the whole run, shared by the worker threads."""

    def __init__(self, image: Path | None):
        self.image = image
        self.done: dict[str, BaseImage | ToolError] = {}
        self.guard = threading.Lock()

    def get(self, s: VmSession) -> BaseImage:
        key = str(self.image) if self.image else s.machine.image_attr
        with self.guard:  # builds run one at a time: nix parallelises inside one build anyway
            if key not in self.done:
                try:
                    self.done[key] = resolve_image(s.settings, s.machine, self.image)
                except ToolError as e:
                    self.done[key] = e
            built = self.done[key]
        if isinstance(built, ToolError):
            raise built
        return built
