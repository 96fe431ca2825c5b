"""Internal qcow2 snapshots of one disk of a shut-off domain, through libvirt's snapshot API.

libvirt runs `qemu-img snapshot` on the hypervisor for an inactive domain: the snapshot lives in the
disk's own qcow2 file (no copy, no host-side write from ivm), and later writes are copy-on-write.
"""

from __future__ import annotations

from dataclasses import dataclass

import libvirt
from lxml import etree
from lxml.builder import E

from ivm.errors import ToolError
from ivm.hypervisor.connection import libvirt_errors
from ivm.hypervisor.handles import DomainHandle


@dataclass(frozen=True)
class Snapshot:
    name: str
    created: int  # unix time
    description: str


def disk_target(domain_xml: str, volume: str) -> str:
    """The target (vdb) of the disk backed by pool volume `volume`."""
    root = etree.fromstring(domain_xml.encode())
    for disk in root.iterfind("devices/disk"):
        source, target = disk.find("source"), disk.find("target")
        if source is not None and target is not None and source.get("volume") == volume:
            return str(target.get("dev"))
    raise ToolError(f"the domain has no disk on volume {volume}", "redefine it with `ivm define`")


def create(dom: DomainHandle, name: str, description: str, target: str) -> None:
    """Snapshot disk `target` alone (the others are read-only or raw) of the shut-off domain."""
    root = etree.fromstring(str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).encode())
    disks = [
        E.disk(name=str(t.get("dev")), snapshot="internal" if t.get("dev") == target else "no")
        for t in root.iterfind("devices/disk/target")
    ]
    xml = etree.tostring(E.domainsnapshot(E.name(name), E.description(description), E.disks(*disks)))
    with libvirt_errors(f"snapshotting {target} of {dom.name()}"):
        dom.snapshotCreateXML(xml.decode(), 0)


def listed(dom: DomainHandle) -> list[Snapshot]:
    """The domain's snapshots, oldest first."""
    with libvirt_errors(f"listing the snapshots of {dom.name()}"):
        found = []
        for snap in dom.listAllSnapshots(0):
            doc = etree.fromstring(str(snap.getXMLDesc(0)).encode())
            found.append(
                Snapshot(
                    snap.getName(), int(doc.findtext("creationTime") or 0), doc.findtext("description") or ""
                )
            )
    return sorted(found, key=lambda s: (s.created, s.name))


def revert(dom: DomainHandle, name: str) -> None:
    with libvirt_errors(f"restoring snapshot {name} of {dom.name()}"):
        dom.revertToSnapshot(dom.snapshotLookupByName(name, 0), 0)


def delete(dom: DomainHandle, name: str) -> None:
    with libvirt_errors(f"deleting snapshot {name} of {dom.name()}"):
        dom.snapshotLookupByName(name, 0).delete(0)
