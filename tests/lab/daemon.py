"""Start a real libvirt daemon without systemd, and choose the domain type this host can run."""

from __future__ import annotations

import glob
import grp
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ivm.hypervisor.host import local_kvm_usable

SYSTEM_URI = "qemu:///system"
QEMU_LOG_DIR = Path("/var/log/libvirt/qemu")  # the system daemon's per-domain QEMU logs
# Daemons live in sbin, which a non-login or non-root PATH often lacks.
_SBIN = ("/usr/sbin", "/sbin")


class DaemonError(RuntimeError):
    """No libvirt daemon answers and none could be started."""


def _find(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    return shutil.which(name, path=path)


def _answers(uri: str) -> bool:
    virsh = _find("virsh")
    if virsh is None:
        raise DaemonError("virsh not found: install libvirt-clients")
    try:
        done = subprocess.run(
            [virsh, "-c", uri, "uri"], capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _daemons() -> list[str]:
    """The daemons to start, by what is installed: monolithic libvirtd if present, else modular."""
    names = ["virtlogd", "libvirtd"] if _find("libvirtd") else ["virtlogd", "virtqemud", "virtstoraged"]
    found = [_find(n) for n in names]
    missing = [n for n, f in zip(names, found, strict=True) if f is None]
    if missing:
        raise DaemonError(
            f"libvirt daemons not installed: {', '.join(missing)} (install libvirt-daemon-system)"
        )
    return [f for f in found if f is not None]


@contextmanager
def kvm_for_qemu() -> Iterator[None]:
    """Give /dev/kvm the group and mode udev would (kvm, 0660) where no udev ran, and put back the
    owner group and mode it had on exit. A change to the host: only where the caller opted in.

    With /dev/kvm 0600 root, libvirt probes QEMU with KVM, then finds KVM unusable for the
    libvirt-qemu user and calls that probe outdated ("KVM was enabled when probing ... but it is
    not available now"): it re-probes on every call that needs capabilities, measured here at
    ~9 s per call and minutes per defineXML.
    """
    kvm = Path("/dev/kvm")
    try:
        group = grp.getgrnam("kvm").gr_gid
    except KeyError:
        yield
        return
    before = kvm.stat() if kvm.exists() else None
    if os.geteuid() != 0 or before is None or before.st_gid != 0 or before.st_mode & 0o060:
        yield
        return
    os.chown(kvm, -1, group)
    kvm.chmod(0o660)
    try:
        yield
    finally:
        os.chown(kvm, -1, before.st_gid)
        kvm.chmod(stat.S_IMODE(before.st_mode))


def ensure_libvirt(uri: str = SYSTEM_URI, timeout: float = 30.0) -> str:
    """Return `uri` once a daemon answers there, starting one (as root, for qemu:///system) if needed."""
    if _answers(uri):
        return uri
    if uri != SYSTEM_URI:
        # qemu:///session spawns its own daemon on connect; nothing else here can start one.
        raise DaemonError(f"no libvirt daemon answers at {uri}")
    if os.geteuid() != 0:
        raise DaemonError(f"no libvirt daemon answers at {uri}, and starting one needs root")
    daemons = _daemons()
    errors = []
    for daemon in daemons:
        # A second copy of a running daemon exits on its pid-file lock: harmless, so failures
        # only explain a timeout below.
        run = subprocess.run([daemon, "-d"], capture_output=True, text=True, timeout=30, check=False)
        if run.returncode != 0:
            errors.append(f"{Path(daemon).name}: {run.stderr.strip() or run.returncode}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers(uri):
            return uri
        time.sleep(0.2)
    started = ", ".join(Path(d).name for d in daemons)
    raise DaemonError(
        f"started {started} but nothing answers at {uri} after {timeout:.0f} s"
        + (f" ({'; '.join(errors)})" if errors else "")
    )


def virt_type() -> str:
    """`kvm` only where KVM can really run guests, else `qemu` (TCG): the tool's own test."""
    return "kvm" if local_kvm_usable() else "qemu"


def remove_domain_logs(uri: str, names: Iterable[str]) -> None:
    """The system daemon keeps a domain's QEMU log (and its rotations) after the domain is gone:
    remove those of `names`, which must be domains this caller made and removed."""
    if uri != SYSTEM_URI or os.geteuid() != 0:
        return
    for name in names:
        for path in QEMU_LOG_DIR.glob(f"{glob.escape(name)}.log*"):
            path.unlink(missing_ok=True)
