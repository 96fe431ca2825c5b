"""Domains (VMs) through libvirt: define, start, stop, undefine, inspect."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, TypeVar

import libvirt
from lxml import etree

from ivm.errors import ToolError
from ivm.hypervisor.connection import libvirt_errors, translate
from ivm.hypervisor.handles import Connection, DomainHandle
from ivm.poll import SYSTEM, Clock, Deadline, poll

T = TypeVar("T")

log = logging.getLogger("ivm.domains")
PROGRESS_EVERY = 10.0  # seconds between "still waiting" lines


class State(StrEnum):
    RUNNING = "running"
    SHUT_OFF = "shut off"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting down"
    CRASHED = "crashed"
    SUSPENDED = "suspended"
    OTHER = "other"
    UNDEFINED = "not defined"


_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: State.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: State.RUNNING,
    libvirt.VIR_DOMAIN_SHUTOFF: State.SHUT_OFF,
    libvirt.VIR_DOMAIN_PAUSED: State.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: State.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_CRASHED: State.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: State.SUSPENDED,
}


def xml_unless_gone(dom: DomainHandle, flags: int = 0) -> str | None:
    """A listed domain's XML, or None if it was undefined since (another client's work)."""
    try:
        return str(dom.XMLDesc(flags))
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _retry_if_one_vanished(call: Callable[[], T], attempts: int = 3) -> T:
    """A fleet-wide call fails whole when one domain is undefined while the daemon gathers it:
    try again, a bounded number of times."""
    for attempt in range(attempts):
        try:
            return call()
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


class Domains:
    def __init__(self, conn: Connection):
        self.conn = conn
        self._listed: dict[str, DomainHandle] | None = None  # every domain, when a fleet-wide read asked
        self._states: dict[str, int] = {}

    def list_all(self) -> None:
        """Fetch every domain and its state in two calls, so that hundreds cost no more calls
        (`status` of a fleet); defining or undefining through this object forgets them."""
        with libvirt_errors("listing domains"):
            stats = _retry_if_one_vanished(
                lambda: self.conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
            )
        self._states = {dom.name(): int(values["state.state"]) for dom, values in stats}
        self._listed = {dom.name(): dom for dom, _values in stats}

    def lookup(self, name: str) -> DomainHandle | None:
        if self._listed is not None:
            return self._listed.get(name)
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise translate(e, f"looking up domain {name}") from None

    def name_by_uuid(self, uuid: str) -> str | None:
        try:
            return str(self.conn.lookupByUUIDString(uuid).name())
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise translate(e, f"looking up the domain with UUID {uuid}") from None

    def all(self) -> list[DomainHandle]:
        with libvirt_errors("listing domains"):
            return list(self.conn.listAllDomains(0))

    def state(self, dom: DomainHandle | None) -> State:
        if dom is None:
            return State.UNDEFINED
        if self._listed is not None and dom.name() in self._states:
            return _STATES.get(self._states[dom.name()], State.OTHER)
        with libvirt_errors("reading a domain's state"):
            code = dom.state()[0]
        return _STATES.get(code, State.OTHER)

    def xml_unless_gone(self, dom: DomainHandle) -> str | None:
        """The persistent definition, or None if another client undefined the domain since it was
        listed (for fleet-wide reads that must not fail on someone else's work)."""
        with libvirt_errors("reading a domain's XML"):
            return xml_unless_gone(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)

    def xml(self, dom: DomainHandle) -> str:
        """The persistent (inactive) definition: what the next boot will use."""
        with libvirt_errors("reading a domain's XML"):
            return str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))

    def define(self, xml: str, name: str) -> DomainHandle:
        self._listed, self._states = None, {}
        with libvirt_errors(f"defining domain {name}"):
            return self.conn.defineXML(xml)

    def start(self, dom: DomainHandle) -> None:
        with libvirt_errors(f"starting {dom.name()}"):
            dom.create()

    def shutdown(self, dom: DomainHandle, timeout: float) -> bool:
        """Ask the guest to power off (ACPI); True once it is off within `timeout` seconds."""
        name = dom.name()
        with libvirt_errors(f"shutting down {name}"):
            try:
                dom.shutdown()
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                    raise
        return self.wait_off(dom, timeout)

    def wait_off(
        self, dom: DomainHandle, timeout: float, every: float = PROGRESS_EVERY, clock: Clock = SYSTEM
    ) -> bool:
        """Wait for the guest to power off, saying what for and how long, and every `every`
        seconds how long it has waited (a guest that ignores ACPI would otherwise mean silence)."""
        deadline = Deadline.after(timeout, clock)
        if self.state(dom) is State.SHUT_OFF:
            return True
        log.info("waiting up to %g s for %s to shut down (ACPI power button)", timeout, dom.name())
        off = poll(
            lambda: True if self.state(dom) is State.SHUT_OFF else None,
            deadline,
            interval=0.2,
            what=f"{dom.name()} to shut down",
            report_every=every,
            logger=log,
        )
        return off is not None

    def power_off(self, dom: DomainHandle) -> None:
        """Pull the plug (virsh destroy); the definition and disks stay."""
        with libvirt_errors(f"forcing {dom.name()} off"):
            try:
                dom.destroy()
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                    raise

    def undefine(self, dom: DomainHandle) -> None:
        """Remove the definition and its firmware variables (nvram)."""
        name = dom.name()
        self._listed, self._states = None, {}
        flags = (
            libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
            | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        )
        with libvirt_errors(f"undefining {name}"):
            try:
                dom.undefineFlags(flags)
            except libvirt.libvirtError as e:
                # Drivers without nvram support (the test driver) refuse the flag.
                if e.get_error_code() not in (
                    libvirt.VIR_ERR_NO_SUPPORT,
                    libvirt.VIR_ERR_INVALID_ARG,
                    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
                ):
                    raise
                dom.undefine()
        log.debug("undefined %s", name)


def require(dom: DomainHandle | None, name: str) -> DomainHandle:
    if dom is None:
        raise ToolError(f"{name} is not defined", f"run `ivm define {name}` (or `ivm up {name}`)")
    return dom


PENDING_NS = "urn:x-ivm:pending:1"


def _set_marker(dom: DomainHandle, namespace: str, element: str, prefix: str, on: bool, what: str) -> None:
    """Set or clear an empty element in the persistent definition's metadata: it outlives a
    crashed ivm run, so the next run knows what is still owed."""
    with libvirt_errors(f"recording {what} of {dom.name()}"):
        dom.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            f"<{element}/>" if on else None,
            prefix if on else None,
            namespace,
            libvirt.VIR_DOMAIN_AFFECT_CONFIG,
        )


def _has_marker(dom: DomainHandle, namespace: str) -> bool:
    try:
        dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, namespace, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return False
        raise translate(e, f"reading {dom.name()}'s metadata") from None
    return True


def set_restart_pending(dom: DomainHandle, pending: bool) -> None:
    """Remember that a run owes this VM a start (it stopped it, or defined it new) or, while it
    runs, a restart into its new definition, so a re-run after a crash still makes it."""
    _set_marker(dom, PENDING_NS, "restart", "ivmp", pending, "the upgrade")


def restart_pending(dom: DomainHandle) -> bool:
    return _has_marker(dom, PENDING_NS)


def addresses(dom: DomainHandle) -> list[str]:
    """The VM's IP addresses: from libvirt's DHCP leases, else from the guest agent.

    The agent's answer is the guest's word: only IP addresses of the domain's own NICs are kept.
    """
    macs = interface_macs(str(dom.XMLDesc(0)))
    for source in (
        libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
        libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
    ):
        try:
            interfaces = dom.interfaceAddresses(source, 0) or {}
        except libvirt.libvirtError:
            continue  # no lease source (bridged NIC) or no agent in the guest
        found = usable_addresses(interfaces, macs)
        if found:
            return found
    return []


def interface_macs(domain_xml: str) -> frozenset[str]:
    """The MAC addresses of the domain's network interfaces, lowercased."""
    root = etree.fromstring(domain_xml.encode(), etree.XMLParser(resolve_entities=False, no_network=True))
    return frozenset(str(m).lower() for m in root.xpath("devices/interface/mac/@address"))


def usable_addresses(interfaces: Mapping[str, Any], macs: frozenset[str]) -> list[str]:
    """The addresses in a libvirt interfaceAddresses() answer that ssh may be pointed at: real IP
    addresses (never an option-like string) on an interface whose MAC is one of the domain's."""
    found: list[str] = []
    for _, iface in sorted(interfaces.items(), key=lambda item: str(item[0])):
        hwaddr = iface.get("hwaddr") if isinstance(iface, Mapping) else None
        if not isinstance(hwaddr, str) or hwaddr.lower() not in macs:
            continue
        for addr in iface.get("addrs") or []:
            ip = routable_ip(addr.get("addr") if isinstance(addr, Mapping) else None)
            if ip is not None and ip not in found:
                found.append(ip)
    return found


def routable_ip(value: object) -> str | None:
    """`value` as a canonical IP address if it is one a VM can be reached at, else None."""
    if not isinstance(value, str):
        return None
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            return None  # a zone names a host interface the guest picked
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return None
    if isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address("255.255.255.255"):
        return None
    return str(ip)


HEALTH_NS = "urn:x-ivm:health:1"


def set_health_pending(dom: DomainHandle, pending: bool) -> None:
    """Remember that an upgrade restarted this VM on a new base and has not yet seen it healthy, so
    a re-run after a crash still judges it (and rolls it back if need be)."""
    _set_marker(dom, HEALTH_NS, "health", "ivmh", pending, "the health check")


def health_pending(dom: DomainHandle) -> bool:
    return _has_marker(dom, HEALTH_NS)
