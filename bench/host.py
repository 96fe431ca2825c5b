"""The machine a bench ran on: CPU, OS, kernel, libvirt, QEMU, accelerator, disk, and the ivm commit."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.integration.harness.daemon import virt_type


def _out(*argv: str) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _os_release() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return platform.platform()
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)', text, re.MULTILINE)
    return match.group(1) if match else platform.platform()


def describe(conn: Any, pool_path: Path) -> dict[str, Any]:
    lscpu = dict(
        (k.strip(), v.strip())
        for k, v in (line.split(":", 1) for line in _out("lscpu").splitlines() if ":" in line)
    )
    version = conn.getLibVersion()
    debian = Path("/etc/debian_version")
    df = _out("df", "-h", "--output=source,fstype,size,avail", str(pool_path)).splitlines()
    meminfo = Path("/proc/meminfo").read_text().split()
    return {
        "cpu": lscpu.get("Model name", platform.processor()),
        "cpus": int(lscpu.get("CPU(s)", os.cpu_count() or 0)),
        "hypervisor_vendor": lscpu.get("Hypervisor vendor", "none"),
        "virtualization_flags": lscpu.get("Virtualization", "none (no vmx/svm)"),
        "memory_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024**2, 1),
        "os": _os_release(),
        "debian_version": debian.read_text().strip() if debian.is_file() else None,
        "kernel": platform.release(),
        "libvirt": f"{version // 1000000}.{version // 1000 % 1000}.{version % 1000}",
        "qemu": _out("qemu-system-x86_64", "--version").splitlines()[0],
        "accelerator": "KVM" if virt_type() == "kvm" else "TCG (KVM unusable here: no vmx/svm)",
        "python": platform.python_version(),
        "pool_filesystem": df[-1] if df else "",
        "ivm_commit": _out("git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"),
    }


class LoadSampler:
    """The 1-minute load average every `every` seconds in a background thread, while in use."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def mark(self) -> int:
        return len(self.samples)

    def since(self, mark: int) -> list[float]:
        return self.samples[mark:]

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
