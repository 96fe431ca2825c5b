"""`define` and `xml`: the domain a VM should have, and making libvirt's definition match it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from lxml import etree

import ivm
from ivm.domain_xml import DomainSpec, Metadata, covers, domain_element, domain_xml, read_metadata
from ivm.errors import ToolError
from ivm.host import virt_type
from ivm.hypervisor.connection import is_local
from ivm.hypervisor.domains import State
from ivm.hypervisor.security import dac_label
from ivm.identity.source import machine_dir, read_machine_id
from ivm.ops.provision import boot_base, resolve_image, vm_identity
from ivm.ops.session import VmSession

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
    if preview:
        machine_id = read_machine_id(machine_dir(s.settings.project_root, s.name))
    else:
        machine_id = vm_identity(s, generate=False).machine_id
    dom = s.domain()
    current = read_metadata(s.hv.domains.xml(dom)) if dom is not None else None
    previous = None
    if current is not None:
        previous = current.base if current.base != base_hash else current.previous_base
    virt = virt_type(s.hv.conn, s.hv.uri, s.settings.virt_type)
    return DomainSpec(
        name=s.name,
        machine=s.machine,
        machine_id=machine_id,
        pool=s.settings.pool,
        volumes=s.volumes,
        metadata=Metadata(s.name, base_hash, previous, ivm.__version__),
        virt_type=virt,
        firmware=s.settings.firmware,
        dac=dac_label(s.hv.conn, s.hv.uri, s.name, virt),
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


def define(s: VmSession, base_hash: str | None = None) -> DefineResult:
    spec = desired_spec(s, base_hash or created_base(s))
    dom = s.domain()
    if dom is not None:
        actual = etree.fromstring(s.hv.domains.xml(dom).encode())
        running = s.hv.domains.state(dom) is State.RUNNING
        if (
            covers(domain_element(spec), actual)
            and read_metadata(etree.tostring(actual, encoding="unicode")) == spec.metadata
        ):
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
    base = boot_base(s.hv, s.volumes.boot) or resolve_image(s, image).hash
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
