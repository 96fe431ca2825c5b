"""What `plan` compares: the desired state of a VM (its files and the current build) and what a
hypervisor holds for it, read through hypervisor/ only. Reading changes nothing."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from lxml import etree

from ivm.config import Settings
from ivm.disks import HEADER, Header, has_header, identity_digest, is_complete
from ivm.domain_xml import DomainSpec, domain_xml, read_metadata
from ivm.errors import ToolError, UsageError
from ivm.hypervisor.domains import State, restart_pending
from ivm.hypervisor.host import Hypervisor
from ivm.names import check_vm_name
from ivm.ops.define import desired_spec
from ivm.ops.plan import Desired, FleetPlan, Observed, Orphan, VmPlan, plan_fleet
from ivm.ops.provision import certificate_due, vm_identity
from ivm.ops.session import VmSession, open_hypervisor
from ivm.ops.status import current_bases
from ivm.volumes import base_hash_of, base_volume


def select(settings: Settings, names: Sequence[str], all_vms: bool) -> list[str]:
    """The VMs a fleet command works on: the named ones (each a known machine) or, with --all,
    every machine; naming none without --all, or both, is a usage error."""
    if bool(names) == all_vms:
        raise UsageError("name the VMs, or pass --all", "e.g. `web1 web2`, or `--all` for every machine")
    wanted = list(dict.fromkeys(check_vm_name(n) for n in names)) or sorted(settings.machines)
    for n in wanted:
        settings.machine(n)  # unknown names fail here, before anything is read or changed
    return wanted


def by_hypervisor(settings: Settings, names: Iterable[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for name in names:
        groups[settings.uri_for(settings.machine(name))].append(name)
    return dict(groups)


def pool_bases(hv: Hypervisor) -> frozenset[str]:
    return frozenset(
        h
        for v in hv.storage.volume_names()
        if (h := base_hash_of(v)) is not None and is_complete(hv, base_volume(h), Header.QCOW2)
    )


def observe_vm(s: VmSession, current: str | None, bases: frozenset[str]) -> tuple[Desired, Observed]:
    """Both sides of one VM; a ToolError for what cannot be planned (an invalid identity file)."""
    hv, vols = s.hv, s.volumes
    present = frozenset(v for v in vols.all() if hv.storage.volume(v) is not None)
    backing = hv.storage.backing_path(vols.boot) if vols.boot in present else None
    backing_hash = base_hash_of(Path(backing).name) if backing else None
    on_base = backing_hash if backing_hash in bases else None  # as boot_base(), one download fewer
    head = hv.storage.head(vols.identity, HEADER) if vols.identity in present else b""
    identity_ok = has_header(head, Header.EXT4)
    disk_digest = identity_digest(head)
    dom = s.domain()
    actual = hv.domains.xml(dom) if dom is not None else None
    observed = Observed(
        name=s.name,
        volumes=present if identity_ok else present - {vols.identity},
        boot_base=on_base,
        identity_digest=disk_digest,
        domain_xml=actual,
        running=dom is not None and hv.domains.state(dom) is not State.SHUT_OFF,
        restart_pending=dom is not None and restart_pending(dom),
        pool_bases=bases,
    )
    created = on_base is not None
    try:
        identity = vm_identity(s, generate=False)
    except UsageError:
        if created:
            raise
        return Desired(s.name, hv.uri, current, None, None), observed
    target = current or on_base
    wanted_xml = None
    if target is not None and created:
        spec = desired_spec(s, target)
        if actual is not None:  # define keeps the UUID libvirt knows the domain by
            spec = _with_uuid(spec, actual)
        wanted_xml = domain_xml(spec)
    resign = certificate_due(s, identity)
    return Desired(s.name, hv.uri, current, identity.digest, wanted_xml, resign), observed


def _with_uuid(spec: DomainSpec, actual: str) -> DomainSpec:
    return replace(spec, uuid=etree.fromstring(actual.encode()).findtext("uuid"))


def orphans(hv: Hypervisor, settings: Settings) -> list[Orphan]:
    """Domains ivm defined with disks in this pool whose machine is not in machines.json."""
    found: list[Orphan] = []
    for dom in hv.domains.all():
        if dom.name() in settings.machines:
            continue  # a machine's own domain: no need to read it
        xml = hv.domains.xml_unless_gone(dom)
        if xml is None:
            continue  # undefined by another client since the listing
        root = etree.fromstring(xml.encode())  # parsed once, read twice
        meta = read_metadata(root)
        if meta is None:
            continue
        if not any(src.get("pool") == settings.pool for src in root.iterfind("devices/disk/source")):
            continue  # another pool's VM: another project's fleet
        found.append(Orphan(dom.name(), hv.uri, meta.machine, hv.domains.state(dom) is not State.SHUT_OFF))
    return found


def plan(
    settings: Settings, names: Sequence[str], all_vms: bool, image: Path | None, evaluate: bool = True
) -> FleetPlan:
    """Observe every wanted VM (one connection per hypervisor) and plan it."""
    wanted = select(settings, names, all_vms)
    current = current_bases(settings, wanted, image, evaluate)
    pairs: list[tuple[Desired, Observed] | VmPlan] = []
    found: list[Orphan] = []
    for uri, vms in by_hypervisor(settings, wanted).items():
        try:
            with open_hypervisor(settings, uri) as hv:
                bases = pool_bases(hv)
                for name in vms:
                    s = VmSession(name, settings.machine(name), settings, hv)
                    try:
                        pairs.append(observe_vm(s, current.get(name), bases))
                    except ToolError as e:
                        pairs.append(VmPlan(name, uri, error=e.message))
                if all_vms:
                    found += orphans(hv, settings)
        except ToolError as e:
            pairs += [VmPlan(n, uri, error=e.message) for n in vms]
    return plan_fleet(pairs, found)
