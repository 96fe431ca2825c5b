"""`destroy`: remove a VM's definition and disks — its var disk only when asked."""

from __future__ import annotations

from dataclasses import dataclass

from ivm.errors import ToolError
from ivm.hypervisor.domains import State
from ivm.ops.session import VmSession


@dataclass(frozen=True)
class DestroyResult:
    name: str
    undefined: bool
    deleted: tuple[str, ...]
    kept_var: str | None


def destroy(s: VmSession, delete_data: bool, force: bool) -> DestroyResult:
    dom = s.domain()
    if dom is not None:
        state = s.hv.domains.state(dom)
        if state not in (State.SHUT_OFF, State.CRASHED):
            if not force:
                raise ToolError(
                    f"{s.name} is {state.value}",
                    f"stop it first (ivm stop {s.name}) or pass --force to power it off",
                )
            s.hv.domains.power_off(dom)
        s.hv.domains.undefine(dom)
    vols = s.volumes
    doomed = [vols.boot, vols.identity] + ([vols.var] if delete_data else [])
    deleted = tuple(v for v in doomed if s.hv.storage.delete(v, wipe=v == vols.identity))
    kept = vols.var if not delete_data and s.hv.storage.volume(vols.var) is not None else None
    return DestroyResult(s.name, dom is not None, deleted, kept)
