"""Each VM's own DAC identity (uid) on hypervisors where nothing else keeps QEMU processes apart.

libvirt hands every disk to the QEMU user at start and does not give read-only disks back at
shutdown. Where a MAC driver (AppArmor, SELinux) confines each QEMU to its own files that is
harmless; on a DAC-only host one shared QEMU uid would read every VM's identity image, host key
included. There, each domain runs QEMU as its own uid from UID_RANGE (unused by systemd's
allocation scheme), with the daemon's QEMU group (which opens libvirt's per-domain directories).
"""

from __future__ import annotations

import hashlib

from lxml import etree

from ivm.domain_xml import DacLabel
from ivm.hypervisor.connection import libvirt_errors
from ivm.hypervisor.domains import xml_unless_gone
from ivm.hypervisor.handles import Connection
from ivm.hypervisor.uri import parse_uri

UID_RANGE = range(0x70000000, 0x71000000)  # 1879048192-1895825407: free in systemd's UID ranges
MAC_MODELS = frozenset({"apparmor", "selinux"})


def needs_own_uid(uri: str, caps_xml: str) -> bool:
    """True on a system QEMU daemon whose only security model is DAC. Pure."""
    parsed = parse_uri(uri)
    if parsed.driver != "qemu" or parsed.text.split("?")[0].endswith("/session"):
        return False  # session: QEMU already runs as the user who owns the files
    models = {m.text for m in etree.fromstring(caps_xml.encode()).iterfind("host/secmodel/model")}
    return "dac" in models and not models & MAC_MODELS


def qemu_gid(caps_xml: str, virt_type: str) -> int | None:
    """The daemon's QEMU group, from the DAC base label for `virt_type` ("+64055:+64055"). Pure."""
    labels = etree.fromstring(caps_xml.encode()).findall("host/secmodel/baselabel")
    chosen = next((b for b in labels if b.get("type") == virt_type), labels[0] if labels else None)
    if chosen is None or chosen.text is None or ":" not in chosen.text:
        return None
    return int(chosen.text.split(":")[1].lstrip("+"))


def static_uid(xml: str | etree._Element) -> int | None:
    """The uid of a domain's static DAC label (its XML as text, or already parsed), if it has one.
    Pure."""
    doc = etree.fromstring(xml.encode()) if isinstance(xml, str) else xml
    for label in doc.iterfind("seclabel"):
        if label.get("model") == "dac" and label.get("type") == "static":
            text = label.findtext("label") or ""
            try:
                return int(text.split(":")[0].lstrip("+"))
            except ValueError:
                return None
    return None


def choose_uid(name: str, current: int | None, taken: set[int]) -> int:
    """The domain's uid: the one it has, else one derived from its name, moved on past uids other
    domains hold (so two domains never share one). Pure and deterministic."""
    if current is not None and current in UID_RANGE and current not in taken:
        return current
    start = int.from_bytes(hashlib.sha256(f"ivm-dac-uid:{name}".encode()).digest()[:8], "big")
    for step in range(len(UID_RANGE)):
        uid = UID_RANGE[(start + step) % len(UID_RANGE)]
        if uid not in taken:
            return uid
    raise RuntimeError("every uid of the range is taken")  # 16 million domains: not reachable


def capabilities(conn: Connection) -> str:
    with libvirt_errors("reading the hypervisor's capabilities"):
        return str(conn.getCapabilities())


def caps_have_dac(caps_xml: str) -> bool:
    """The daemon runs libvirt's DAC security driver, so a per-disk DAC seclabel is understood
    (system daemons; a session daemon runs QEMU as the user and has none, and refuses one). Pure."""
    return "dac" in {m.text for m in etree.fromstring(caps_xml.encode()).iterfind("host/secmodel/model")}


def domain_uids(conn: Connection) -> dict[str, int | None]:
    """Every domain's static DAC uid (None without one), skipping those undefined meanwhile."""
    with libvirt_errors("listing domains"):
        listed = [(d.name(), xml_unless_gone(d)) for d in conn.listAllDomains(0)]
    return {name: static_uid(xml) for name, xml in listed if xml is not None}


def label_for(
    uri: str, caps_xml: str, virt_type: str, name: str, uids: dict[str, int | None]
) -> DacLabel | None:
    """The static DAC label domain `name` should have, given every domain's uid, or None where the
    daemon's own QEMU user is safe (a MAC driver, or a session daemon). Pure."""
    if not needs_own_uid(uri, caps_xml):
        return None
    gid = qemu_gid(caps_xml, virt_type)
    if gid is None:
        return None
    taken = {uid for other, uid in uids.items() if other != name and uid is not None}
    return DacLabel(choose_uid(name, uids.get(name), taken), gid)
