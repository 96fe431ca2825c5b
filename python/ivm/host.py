"""Facts about the hypervisor that shape a domain: can it use KVM, where does the pool live."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lxml import etree

from ivm.errors import UsageError
from ivm.hypervisor.connection import is_local, libvirt_errors

VIRT_TYPES = ("kvm", "qemu")


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


def virt_type(conn: Any, uri: str, override: str | None) -> str:
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


def default_pool_path(uri: str, pool: str) -> str:
    """Where a dir pool lives unless IVM_POOL_PATH says: a folder named after the pool in libvirt's
    images dir for this kind of connection, so two pools never share a directory."""
    if is_session(uri):
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return str(Path(data) / "libvirt" / "images" / pool)
    return f"/var/lib/libvirt/images/{pool}"


def is_session(uri: str) -> bool:
    """A local per-user daemon (qemu:///session): it runs QEMU as the calling user."""
    return urlsplit(uri).path.rstrip("/").endswith("session") and is_local(uri)
