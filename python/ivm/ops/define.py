"""`define` and `xml`: the domain a VM should have, and making libvirt's definition match it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from lxml import etree

import ivm
from ivm.disks import boot_base
from ivm.domain_xml import DomainSpec, Metadata, covers, domain_element, domain_xml, read_metadata
from ivm.errors import ToolError
from ivm.hypervisor.domains import State
from ivm.hypervisor.uri import is_local
from ivm.identity.source import machine_dir, read_machine_id
from ivm.ops.provision import resolve_image, vm_identity
from ivm.ops.session import VmSession, check_network_reachable

log = logging.getLogger("ivm.define")


@dataclass(frozen=True)
class DefineResult:
    name: str
    changed: bool
    was_defined: bool
    running: bool


def desired_spec(s: VmSession, base_hash: str, preview: bool = False) -> DomainSpec:
    """The domain for this VM on `base_hash`, keeping the previous base for rollback. A preview
    reads only the machine-id (if there is one yet) and generates nothing."""
    check_network_reachable(s.name, s.machine, s.hv.uri)
    if preview:
        machine_id = read_machine_id(machine_dir(s.settings.project_root, s.name))
    else:
        machine_id = vm_identity(s, generate=False).machine_id
    dom = s.domain()
    current = read_metadata(s.hv.domains.xml(dom)) if dom is not None else None
    previous = None
    if current is not None:
        previous = current.base if current.base != base_hash else current.previous_base
    virt = s.hv.virt_type(s.settings.virt_type)
    return DomainSpec(
        name=s.name,
        machine=s.machine,
        machine_id=machine_id,
        pool=s.settings.pool,
        volumes=s.volumes,
        metadata=Metadata(s.name, base_hash, previous, ivm.__version__),
        virt_type=virt,
        firmware=s.settings.firmware,
        dac=s.hv.dac_label(s.name, virt),
        boot_seclabel=s.hv.has_dac(),
    )


def created_base(s: VmSession) -> str:
    """The base the VM's boot overlay uses; an error if the VM's disks are not all there."""
    base = boot_base(s.hv, s.volumes.boot)
    missing = [v for v in (s.volumes.var, s.volumes.identity) if s.hv.storage.volume(v) is None]
    if base is None or missing:
        raise ToolError(
            f"{s.name} has not been created (missing: {', '.join(missing) or s.volumes.boot})",
            f"run `ivm create {s.name}` first",
        )
    return base


# Devices libvirt adds to every domain it defines: never ivm's, so never a difference.
LIBVIRT_DEVICES = frozenset({"emulator", "controller", "audio"})


def differences(desired: etree._Element, actual: etree._Element) -> tuple[str, ...]:
    """What stands between libvirt's definition `actual` and the `desired` domain, one phrase per
    element; empty when they agree. Semantic, not textual: what libvirt adds (addresses, aliases,
    seclabels, controllers, expanded machine types, defaults) is ignored, but a device ivm no longer
    wants (a NIC removed from meta.nix) counts. The metadata's tool version is not compared:
    a newer ivm alone never redefines or restarts a VM."""
    found: list[str] = []
    remaining = list(actual)
    for child in desired:
        # The UUID is kept as libvirt knows it (define never changes it); devices and metadata below.
        if child.tag in ("uuid", "metadata", "devices"):
            continue
        match = next((a for a in remaining if covers(child, a)), None)
        if match is None:
            found.append(f"{child.tag!s} differs")
        else:
            remaining.remove(match)
    want_devices, have_devices = desired.find("devices"), actual.find("devices")
    have = [d for d in (have_devices if have_devices is not None else []) if not _added_by_libvirt(d)]
    for device in want_devices if want_devices is not None else []:
        match = next((a for a in have if covers(device, a)), None)
        if match is None:
            found.append(f"{_describe(device)} missing or changed")
        else:
            have.remove(match)
    found += [f"{_describe(d)} not wanted" for d in have]
    want_meta = read_metadata(etree.tostring(desired, encoding="unicode"))
    have_meta = read_metadata(etree.tostring(actual, encoding="unicode"))
    if want_meta is not None and (
        have_meta is None or replace(have_meta, tool_version="") != replace(want_meta, tool_version="")
    ):
        found.append("ivm metadata differs")
    return tuple(found)


def _added_by_libvirt(device: etree._Element) -> bool:
    # libvirt gives every x86 domain a PS/2 mouse and keyboard.
    return device.tag in LIBVIRT_DEVICES or (device.tag == "input" and device.get("bus") == "ps2")


def _describe(device: etree._Element) -> str:
    label = next(
        (
            value
            for child, key in (
                ("target", "dev"),
                ("target", "name"),
                ("source", "network"),
                ("source", "bridge"),
            )
            if (found := device.find(child)) is not None and (value := found.get(key))
        ),
        None,
    )
    return f"{device.tag!s} {label}" if label else str(device.tag)


def define(s: VmSession, base_hash: str | None = None) -> DefineResult:
    spec = desired_spec(s, base_hash or created_base(s))
    dom = s.domain()
    if dom is not None:
        actual = etree.fromstring(s.hv.domains.xml(dom).encode())
        running = s.hv.domains.state(dom) is State.RUNNING
        if not differences(domain_element(spec), actual):
            return DefineResult(s.name, changed=False, was_defined=True, running=running)
        # Keep the UUID libvirt knows this domain by, even if the machine-id file changed.
        spec = replace(spec, uuid=actual.findtext("uuid"))
    _check_firmware(s, spec)
    s.hv.domains.define(domain_xml(spec), s.name)
    log.debug("defined %s", s.name)
    return DefineResult(
        s.name,
        changed=True,
        was_defined=dom is not None,
        running=dom is not None and s.hv.domains.state(dom) is State.RUNNING,
    )


def render_xml(s: VmSession, image: Path | None) -> str:
    """The XML `define` would use, writing nothing. Before `create`, the base comes from the image;
    without a machine-id yet, the UUID and MAC (derived from it) are left out and a comment says so."""
    base = boot_base(s.hv, s.volumes.boot) or resolve_image(s.settings, s.machine, image).hash
    spec = desired_spec(s, base, preview=True)
    text = domain_xml(spec)
    if spec.machine_id is None:
        note = (
            f"<!-- preview: machines/{s.name}/machine-id does not exist yet; `ivm create {s.name}` "
            "generates it, and the domain UUID and MAC address are derived from it -->\n"
        )
        text = note + text
    return text


def _check_firmware(s: VmSession, spec: DomainSpec) -> None:
    code = spec.firmware.code
    if code and is_local(s.hv.uri):
        for path in filter(None, (code, spec.firmware.vars_template)):
            if not Path(path).is_file():
                raise ToolError(
                    f"UEFI firmware file {path} does not exist",
                    "fix OVMF_CODE/OVMF_VARS, or unset both to let libvirt pick the firmware",
                )
