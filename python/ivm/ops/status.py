"""`list` and `status`: what each VM runs and how it stands, one connection per hypervisor."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from lxml import etree

from ivm.config import Settings
from ivm.disks import boot_base
from ivm.domain_xml import read_metadata
from ivm.errors import ToolError
from ivm.hypervisor.domains import State
from ivm.hypervisor.host import Hypervisor
from ivm.hypervisor.ownership import find_drift
from ivm.hypervisor.security import static_uid
from ivm.image import image_file, inspect, nix_out_path, store_hash
from ivm.names import check_vm_name
from ivm.ops.session import open_hypervisor
from ivm.volumes import base_volume, vm_volumes

log = logging.getLogger("ivm.status")
# Threads reading VMs' rows on one connection (libvirt connections take concurrent calls): the
# daemon answers one VM while this process parses another's XML.
READERS = 4


class VmState(StrEnum):
    """Where a VM stands: its domain's state, or what of it exists without a domain."""

    RUNNING = State.RUNNING.value
    SHUT_OFF = State.SHUT_OFF.value
    PAUSED = State.PAUSED.value
    SHUTTING_DOWN = State.SHUTTING_DOWN.value
    CRASHED = State.CRASHED.value
    SUSPENDED = State.SUSPENDED.value
    OTHER = State.OTHER.value
    UNDEFINED = State.UNDEFINED.value
    CREATED = "created, not defined"  # its disks exist, its domain does not
    DATA_KEPT = "destroyed, data kept"  # only its var disk is left
    UNKNOWN = "unknown"  # its hypervisor could not be reached (`error` says why)


@dataclass(frozen=True)
class VmStatus:
    name: str
    uri: str
    state: VmState
    base: str | None
    previous_base: str | None
    volumes: dict[str, bool]
    var_used_bytes: int | None
    var_size_bytes: int | None
    current_base: str | None = None  # what a fresh deployment would use (see current_bases)
    behind: bool | None = None  # runs an older base than current_base; None when unknown
    reachable: bool = True  # False when its hypervisor could not be reached (error says why)
    ownership: tuple[str, ...] = ()  # read-only disks whose owner or mode drifted (`start` repairs)
    error: str | None = None  # why the VM could not be read; None when it could

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def status(
    settings: Settings,
    names: Iterable[str] = (),
    image: Path | None = None,
    evaluate: bool = True,
    detail: bool = True,
) -> list[VmStatus]:
    """Each VM's state and disks, and whether it is behind the current build (drift). Without
    DETAIL (`list`) the var disk's use and the disks' ownership are not read."""
    wanted = [check_vm_name(n) for n in names] or sorted(settings.machines)
    by_uri: dict[str, list[str]] = defaultdict(list)
    for name in wanted:
        by_uri[settings.uri_for(settings.machine(name))].append(name)
    current = current_bases(settings, wanted, image, evaluate)
    out: list[VmStatus] = []
    for uri, vms in by_uri.items():
        try:
            with open_hypervisor(settings, uri) as hv:
                hv.domains.list_all()  # three calls for the fleet, not a few per VM
                hv.storage.list_all()
                with ThreadPoolExecutor(READERS) as readers:  # calls in flight while rows are parsed
                    rows = list(readers.map(lambda name: vm_status(hv, name, detail), vms))
                newest = _newest_in_pool(hv, settings, rows)
                out += [_with_drift(r, current.get(r.name) or newest.get(r.name)) for r in rows]
        except ToolError as e:
            out += [
                VmStatus(
                    n, uri, VmState.UNKNOWN, None, None, {}, None, None, reachable=False, error=e.message
                )
                for n in vms
            ]
    return sorted(out, key=lambda v: v.name)


def require_reachable(rows: Iterable[VmStatus]) -> None:
    """After the rows are printed: fail (exit 1) if any hypervisor could not be reached, so a script
    can trust the exit code."""
    lost = sorted({r.uri for r in rows if not r.reachable})
    if lost:
        raise ToolError(
            f"could not reach {len(lost)} hypervisor(s): {', '.join(lost)}",
            "the rows of the others are printed above; start the libvirt daemon there or check the URI",
        )


def current_bases(
    settings: Settings, names: Iterable[str], image: Path | None, evaluate: bool
) -> dict[str, str]:
    """The base each machine would get now: --image's, else the flake's image store hash by `nix eval`
    (no build). Machines left out fall back to the newest base in their pool (see below)."""
    if image is not None:
        h = inspect(image_file(image)).hash
        return dict.fromkeys(names, h)
    if not evaluate:  # a missing nix fails below like any evaluation: no drift from Nix
        return {}
    found: dict[str, str] = {}
    by_attr: dict[str, str | None] = {}
    for name in names:
        attr = settings.machine(name).image_attr
        if attr not in by_attr:
            try:
                out = nix_out_path(settings.flake_ref(), attr, settings.nix, settings.nix_account)
                by_attr[attr] = store_hash(out)
            except ToolError as e:
                log.debug("no drift from nix for %s: %s", attr, e)
                by_attr[attr] = None
        if by_attr[attr]:
            found[name] = str(by_attr[attr])
    return found


def _newest_in_pool(hv: Hypervisor, settings: Settings, rows: list[VmStatus]) -> dict[str, str]:
    """Without Nix: the most recently imported base that a VM of the same image runs."""
    by_attr: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r.base:
            by_attr[settings.machine(r.name).image_attr].append(r.base)
    newest = {
        attr: max(set(bases), key=lambda b: hv.storage.changed_at(base_volume(b)))
        for attr, bases in by_attr.items()
    }
    return {r.name: newest[a] for r in rows if (a := settings.machine(r.name).image_attr) in newest}


def _with_drift(row: VmStatus, current: str | None) -> VmStatus:
    if current is None or row.base is None:
        return replace(row, current_base=current)
    return replace(row, current_base=current, behind=row.base != current)


def vm_status(hv: Hypervisor, name: str, detail: bool = True) -> VmStatus:
    """One VM's row. Without DETAIL (`list`) the var disk's use and the disks' ownership are left
    out: one libvirt call per VM (its XML) instead of two, and no files read."""
    vols = vm_volumes(name)
    present = {v: hv.storage.volume(v) is not None for v in vols.all()}
    dom = hv.domains.lookup(name)
    xml = hv.domains.xml_unless_gone(dom) if dom is not None else None  # drift needs the whole XML
    if xml is None:
        dom = None  # undefined by another client since the listing
    doc = etree.fromstring(xml.encode()) if xml is not None else None  # parsed once, read twice
    meta = read_metadata(doc) if doc is not None else None
    drift = (
        find_drift(
            hv.storage, hv.uri, vols, static_uid(doc) if doc is not None else None,
            base_volume(meta.base) if meta and meta.base else None,
        )
        if detail
        else []
    )  # fmt: skip
    if dom is not None:
        state = VmState(hv.domains.state(dom).value)
    elif present[vols.boot]:
        state = VmState.CREATED
    elif present[vols.var]:
        state = VmState.DATA_KEPT
    else:
        state = VmState.UNDEFINED
    var = hv.storage.info(vols.var) if detail else None
    return VmStatus(
        name=name,
        uri=hv.uri,
        state=state,
        base=meta.base if meta else (boot_base(hv, vols.boot) if present[vols.boot] else None),
        previous_base=meta.previous_base if meta else None,
        volumes=present,
        var_used_bytes=var[1] if var else None,
        var_size_bytes=var[0] if var else None,
        ownership=tuple(d.line() for d in drift),
    )
