"""One open hypervisor: its connection (kept here), ivm's pool and the domains on it, and the facts
about it that shape a domain (virt type, DAC security driver)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from lxml import etree

from ivm.domain_xml import DacLabel
from ivm.errors import UsageError
from ivm.hypervisor.connection import connect, libvirt_errors
from ivm.hypervisor.domains import Domains
from ivm.hypervisor.handles import Connection
from ivm.hypervisor.security import capabilities, caps_have_dac, domain_uids, label_for, needs_own_uid
from ivm.hypervisor.storage import Storage
from ivm.hypervisor.uri import is_local

VIRT_TYPES = ("kvm", "qemu")


@dataclass(frozen=True)
class Hypervisor:
    """One open connection with ivm's pool on it. The connection itself stays inside hypervisor/."""

    uri: str
    storage: Storage
    domains: Domains
    _conn: Connection = field(repr=False)

    # The capabilities and the domains' uids are read once per connection, not once per VM: a
    # fleet command's cost must not grow with VMs times domains. The uids are kept current with
    # every label handed out through this connection.
    @cached_property
    def _capabilities(self) -> str:
        return capabilities(self._conn)

    @cached_property
    def _uids(self) -> dict[str, int | None]:
        return domain_uids(self._conn)

    def virt_type(self, override: str | None) -> str:
        return virt_type(self._conn, self.uri, override)

    def capabilities(self) -> str:
        return self._capabilities

    def has_dac(self) -> bool:
        return caps_have_dac(self.capabilities())

    def dac_label(self, name: str, virt: str) -> DacLabel | None:
        caps = self.capabilities()
        if not needs_own_uid(self.uri, caps):
            return None
        label = label_for(self.uri, caps, virt, name, self._uids)
        if label is not None:
            self._uids[name] = label.uid
        return label


@contextmanager
def open_host(uri: str, pool: str, pool_path: str) -> Iterator[Hypervisor]:
    with connect(uri) as conn:
        yield Hypervisor(uri, Storage(conn, pool, pool_path), Domains(conn), conn)


def local_kvm_usable(cpuinfo: Path = Path("/proc/cpuinfo"), dev: Path = Path("/dev/kvm")) -> bool:
    """KVM works only with hardware virtualisation: /dev/kvm alone can be a broken nested stub,
    so the honest signal is vmx/svm in the CPU flags plus read-write access to /dev/kvm."""
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return bool(re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.MULTILINE)) and os.access(
        dev, os.R_OK | os.W_OK
    )


def virt_type(conn: Connection, uri: str, override: str | None) -> str:
    """Domain type: the override, `test` on the test driver, else kvm where usable, else qemu."""
    if override:
        if override not in VIRT_TYPES:
            raise UsageError(f"unknown virt type {override!r}", "use kvm or qemu")
        return override
    if uri.startswith("test:"):
        return "test"
    if is_local(uri):
        return "kvm" if local_kvm_usable() else "qemu"
    # A remote host: trust its capabilities (it advertises kvm only with /dev/kvm present).
    with libvirt_errors("reading the hypervisor's capabilities", uri):
        caps = etree.fromstring(conn.getCapabilities().encode())
    return "kvm" if caps.xpath("//guest/arch/domain[@type='kvm']") else "qemu"
