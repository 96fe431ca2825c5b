"""`destroy`: remove a VM's definition and disks — its var disk only when asked."""

from __future__ import annotations

from dataclasses import dataclass

from ivm.errors import ToolError
from ivm.hypervisor.domains import State
from ivm.hypervisor.host import Hypervisor
from ivm.ops.session import VmSession
from ivm.volumes import vm_volumes


@dataclass(frozen=True)
class DestroyResult:
    name: str
    undefined: bool
    deleted: tuple[str, ...]
    kept_var: str | None


def destroy(s: VmSession, delete_data: bool, force: bool) -> DestroyResult:
    return destroy_vm(s.hv, s.name, delete_data, force)


def destroy_vm(hv: Hypervisor, name: str, delete_data: bool, force: bool) -> DestroyResult:
    """By name alone, so that `apply --prune` can remove a VM whose machine is gone."""
    dom = hv.domains.lookup(name)
    if dom is not None:
        state = hv.domains.state(dom)
        if state not in (State.SHUT_OFF, State.CRASHED):
            if not force:
                raise ToolError(
                    f"{name} is {state.value}",
                    f"stop it first (ivm stop {name}) or pass --force to power it off",
                )
            hv.domains.power_off(dom)
        hv.domains.undefine(dom)
    vols = vm_volumes(name)
    doomed = [vols.boot, vols.identity] + ([vols.var] if delete_data else [])
    deleted = tuple(v for v in doomed if hv.storage.delete(v, wipe=v == vols.identity))
    kept = vols.var if not delete_data and hv.storage.volume(vols.var) is not None else None
    return DestroyResult(name, dom is not None, deleted, kept)
