"""/var snapshots: taken by `upgrade` while a VM is stopped, named after the base it ran, so that
`rollback --with-data` can bring /var back to how that base left it.

Each is an internal qcow2 snapshot of the var disk made by libvirt (hypervisor/snapshots.py): it
costs no copy, only the blocks /var changes afterwards. The live var disk is never deleted;
restoring one first snapshots the live state, so the data it replaces stays recoverable.
"""

from __future__ import annotations

import re
import time

from ivm.errors import ToolError, UsageError
from ivm.hypervisor import snapshots
from ivm.hypervisor.handles import DomainHandle
from ivm.hypervisor.snapshots import Snapshot
from ivm.ops.session import VmSession

NAME_RE = re.compile(r"var-([0-9a-z]{12})-([0-9]+)")


def snapshot_name(base: str, now: int) -> str:
    return f"var-{base[:12]}-{now}"


def base_of(snapshot: str) -> str | None:
    """The (12-character) base a var snapshot was taken on; None for snapshots ivm did not take."""
    m = NAME_RE.fullmatch(snapshot)
    return m.group(1) if m else None


def var_snapshots(s: VmSession, dom: DomainHandle) -> list[Snapshot]:
    """ivm's /var snapshots of the VM, oldest first."""
    return [x for x in snapshots.listed(dom) if base_of(x.name)]


def take(s: VmSession, dom: DomainHandle, base: str) -> str:
    """Snapshot the shut-off VM's var disk, named after `base`, the base it ran."""
    target = snapshots.disk_target(s.hv.domains.xml(dom), s.volumes.var)
    taken = {x.name for x in snapshots.listed(dom)}
    now = int(time.time())
    while snapshot_name(base, now) in taken:  # two in one second: keep names unique
        now += 1
    name = snapshot_name(base, now)
    snapshots.create(dom, name, f"/var of {s.name} as base {base} left it", target)
    return name


def prune(s: VmSession, dom: DomainHandle, keep: int) -> list[str]:
    """Delete the oldest var snapshots beyond the newest `keep`; the names deleted."""
    old = var_snapshots(s, dom)
    doomed = old[: max(0, len(old) - keep)]
    for x in doomed:
        snapshots.delete(dom, x.name)
    return [x.name for x in doomed]


def choose(s: VmSession, dom: DomainHandle, name: str | None, base: str) -> Snapshot:
    """The snapshot `name`, or the newest taken on `base`; a usage error if there is none."""
    found = var_snapshots(s, dom)
    if name is not None:
        match = [x for x in found if x.name == name]
        if not match:
            raise UsageError(
                f"{s.name} has no /var snapshot named {name!r}",
                f"`ivm snapshots {s.name}` lists them",
            )
        return match[0]
    on_base = [x for x in found if base_of(x.name) == base[:12]]
    if not on_base:
        raise ToolError(
            f"{s.name} has no /var snapshot taken on base {base[:12]}; nothing was changed",
            f"plain `ivm rollback {s.name}` keeps /var as it is; `ivm snapshots {s.name}` lists snapshots",
        )
    return on_base[-1]


def restore(s: VmSession, dom: DomainHandle, chosen: Snapshot, current_base: str) -> str:
    """Put the shut-off VM's /var back to `chosen`, after snapshotting the live /var (whose name is
    returned) so nothing is lost."""
    saved = take(s, dom, current_base)
    snapshots.revert(dom, chosen.name)
    return saved
