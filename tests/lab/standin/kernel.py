"""Fetch Debian's kernel package once, and pick the modules the stand-in guest must load."""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Needed to see and mount virtio disks; crc32c_generic because ext4's metadata_csum asks the
# crypto API for crc32c, whose on-demand modprobe an initrd without modprobe cannot answer.
REQUIRED_MODULES = ("virtio_pci", "virtio_blk", "ext4")
OPTIONAL_MODULES = ("crc32c_generic", "virtio_console")


class StandinError(RuntimeError):
    """The stand-in image cannot be built on this host."""


@dataclass(frozen=True)
class Kernel:
    """An unpacked Debian kernel package."""

    version: str
    vmlinuz: Path
    modules: Path  # lib/modules/<version>, wherever the package put it


def cache_dir() -> Path:
    return Path(os.environ.get("IVM_TEST_CACHE", Path.home() / ".cache" / "ivm-tests"))


def run(*cmd: str, cwd: Path | None = None, stdin: str | None = None) -> str:
    """Run a tool, turning a failure into one error that carries its stderr."""
    try:
        done = subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise StandinError(f"{cmd[0]} not found: install the stand-in's APT_PACKAGES") from e
    if done.returncode != 0:
        raise StandinError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done.stdout


def kernel_package() -> str:
    """The concrete package (linux-image-<abi>-amd64) that the linux-image-amd64 metapackage pulls in."""
    out = run("apt-cache", "depends", "linux-image-amd64")
    found = re.findall(r"Depends: (linux-image-\S+-amd64)\s*$", out, re.MULTILINE)
    if not found:
        raise StandinError("apt-cache knows no linux-image-amd64: run apt-get update")
    return str(found[0])


def fetch_kernel() -> Kernel:
    """Download and unpack the kernel under cache_dir(), or reuse what an earlier run left there."""
    package = kernel_package()
    root = cache_dir() / package
    if not root.is_dir():
        debs = cache_dir() / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        if not list(debs.glob(f"{package}_*.deb")):
            run("apt-get", "download", package, cwd=debs)
        deb = sorted(debs.glob(f"{package}_*.deb"))[-1]
        # Unpack beside the final place, then rename: a crash never leaves half a kernel cached.
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache_dir()))
        try:
            run("dpkg-deb", "-x", str(deb), str(tmp))
            tmp.rename(root)
        except OSError:
            if not root.is_dir():
                raise  # else another test run unpacked the same kernel first
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # already gone after the rename
    vmlinuz = sorted(root.glob("boot/vmlinuz-*"))
    # Debian 12 ships lib/modules; a merged-/usr package (Debian 13 and later) may use usr/lib/modules.
    moddirs = sorted(root.glob("lib/modules/*/kernel")) + sorted(root.glob("usr/lib/modules/*/kernel"))
    if not vmlinuz or not moddirs:
        raise StandinError(f"{root} holds no vmlinuz or modules: remove it and retry")
    return Kernel(moddirs[0].parent.name, vmlinuz[-1], moddirs[0].parent)


def module_bytes(path: Path) -> bytes:
    """A module's ELF image: Debian 13 ships .ko.xz, and busybox insmod wants it plain."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        zstd = shutil.which("zstd")
        if zstd is None:
            raise StandinError(f"{path.name} needs zstd to decompress")
        return subprocess.run([zstd, "-dc", str(path)], capture_output=True, check=True).stdout
    return data


def _depends(elf: bytes) -> list[str]:
    """The `depends=` field of a module's .modinfo section (Debian ships no modules.dep)."""
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _, _, _, offset, size = struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize)
        return name, offset, size

    names = section(shstrndx)[1]
    for i in range(shnum):
        name, offset, size = section(i)
        if elf[names + name : elf.index(b"\0", names + name)] == b".modinfo":
            for field in elf[offset : offset + size].split(b"\0"):
                if field.startswith(b"depends="):
                    return [d for d in field[8:].decode().split(",") if d]
    return []


def _name(path: Path) -> str:
    return path.name.split(".ko")[0].replace("-", "_")


def module_load_order(kernel: Kernel) -> list[Path]:
    """Module files to insmod, dependencies first, for REQUIRED_MODULES and OPTIONAL_MODULES."""
    index = {_name(p): p for p in kernel.modules.rglob("*.ko*")}
    builtin_list = kernel.modules / "modules.builtin"
    listed = builtin_list.read_text().split() if builtin_list.exists() else []
    builtin = {_name(Path(line)) for line in listed}
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name in builtin:
            return
        seen.add(name)
        if name not in index:
            raise StandinError(f"kernel {kernel.version} has no module {name}")
        for dep in _depends(module_bytes(index[name])):
            visit(dep)
        order.append(index[name])

    for name in REQUIRED_MODULES:
        visit(name)
    for name in OPTIONAL_MODULES:
        if name in index:
            visit(name)
    return order
