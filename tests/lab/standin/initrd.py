"""Write the stand-in's initrd: busybox, the /init script and kernel modules in load order."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from .kernel import Kernel, StandinError, module_bytes, module_load_order, run

INIT_SCRIPT = Path(__file__).with_name("init.sh")


@dataclass(frozen=True)
class _Entry:
    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _newc(entries: list[_Entry]) -> bytes:
    """A cpio "newc" archive, written here so every file is root-owned even when built as non-root."""
    out = bytearray()
    for ino, entry in enumerate([*entries, _Entry("TRAILER!!!", 0)], start=1):
        name = entry.name.encode() + b"\0"
        fields = (ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0, *entry.rdev, len(name), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + name
        out += b"\0" * (-len(out) % 4) + entry.data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def busybox_static() -> Path:
    """busybox from the busybox-static package: the dynamic `busybox` package cannot run in an initrd."""
    for line in run("dpkg", "-L", "busybox-static").splitlines():
        if line.endswith("/busybox") and Path(line).is_file():
            return Path(line)
    raise StandinError("busybox-static is not installed")


def _ko(module: Path) -> str:
    return module.name.split(".ko")[0] + ".ko"  # stored decompressed


def build_initrd(kernel: Kernel, dest: Path) -> Path:
    """Write an uncompressed initrd (the kernel reads it in well under a second) to `dest`."""
    modules = module_load_order(kernel)
    directory = stat.S_IFDIR | 0o755
    entries = [
        _Entry("bin", directory),
        _Entry("dev", directory),
        # The kernel opens /dev/console as /init's stdin and stdout, before anything is mounted.
        _Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        _Entry("lib", directory),
        _Entry("lib/modules", directory),
        _Entry("init", stat.S_IFREG | 0o755, INIT_SCRIPT.read_bytes()),
        _Entry("bin/busybox", stat.S_IFREG | 0o755, busybox_static().read_bytes()),
        _Entry(
            "lib/modules/load-order", stat.S_IFREG | 0o644, "".join(f"{_ko(p)}\n" for p in modules).encode()
        ),
        *(_Entry(f"lib/modules/{_ko(p)}", stat.S_IFREG | 0o644, module_bytes(p)) for p in modules),
    ]
    dest.write_bytes(_newc(entries))
    return dest
