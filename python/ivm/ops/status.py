"""`list` and `status`: what each VM runs and how it stands, one connection per hypervisor."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from ivm.config import Settings
from ivm.domain_xml import read_metadata
from ivm.errors import ToolError
from ivm.hypervisor.domains import State
from ivm.names import check_vm_name
from ivm.ops.provision import boot_base
from ivm.ops.session import Hypervisor, open_hypervisor
from ivm.volumes import vm_volumes


@dataclass(frozen=True)
class VmStatus:
    name: str
    uri: str
    state: str
    base: str | None
    previous_base: str | None
    volumes: dict[str, bool]
    var_used_bytes: int | None
    var_size_bytes: int | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def status(settings: Settings, names: Iterable[str] = ()) -> list[VmStatus]:
    wanted = [check_vm_name(n) for n in names] or sorted(settings.machines)
    by_uri: dict[str, list[str]] = defaultdict(list)
    for name in wanted:
        by_uri[settings.uri_for(settings.machine(name))].append(name)
    out: list[VmStatus] = []
    for uri, vms in by_uri.items():
        try:
            with open_hypervisor(settings, uri) as hv:
                out += [vm_status(hv, name) for name in vms]
        except ToolError as e:
            out += [VmStatus(n, uri, f"unreachable: {e.message}", None, None, {}, None, None) for n in vms]
    return sorted(out, key=lambda v: v.name)


def vm_status(hv: Hypervisor, name: str) -> VmStatus:
    vols = vm_volumes(name)
    present = {v: hv.storage.volume(v) is not None for v in vols.all()}
    dom = hv.domains.lookup(name)
    meta = read_metadata(hv.domains.xml(dom)) if dom is not None else None
    if dom is not None:
        state = hv.domains.state(dom).value
    elif any(present.values()):
        state = "created, not defined"
    else:
        state = State.UNDEFINED.value
    var = hv.storage.info(vols.var)
    return VmStatus(
        name=name,
        uri=hv.uri,
        state=state,
        base=meta.base if meta else (boot_base(hv, vols.boot) if present[vols.boot] else None),
        previous_base=meta.previous_base if meta else None,
        volumes=present,
        var_used_bytes=var[1] if var else None,
        var_size_bytes=var[0] if var else None,
    )
