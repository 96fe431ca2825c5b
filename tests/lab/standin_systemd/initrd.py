"""The stand-in's initrd: Debian's systemd in initrd mode (dracut), plus the guest's units and fstab."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.lab.standin.kernel import Kernel, StandinError, run

from .golden import GuestGolden
from .mapping import initrd_files, install_links, read_import_script

MV_SHIM = Path(__file__).with_name("mv-exchange.c")
DRACUT_MODULES = ("systemd", "systemd-initrd", "udev-rules", "base", "fs-lib")
DRIVERS = ("virtio_pci", "virtio_blk", "erofs", "ext4", "crc32c_generic")
# Every tool the guest's units and identity-import.sh call, and what systemd-makefs and fsck run.
TOOLS = (
    "bash", "mkdir", "mount", "umount", "rmdir", "udevadm", "stat", "tr", "wc", "install", "sync",
    "mv", "rm", "dirname", "cat", "chmod", "ls", "printf", "base64", "head", "od",
    "mkfs.ext4", "mke2fs", "e2fsck", "fsck",
    "fsck.ext4", "/usr/lib/systemd/systemd-makefs", "/etc/mke2fs.conf",
)  # fmt: skip


def coreutils_has_exchange() -> bool:
    out = subprocess.run(["mv", "--help"], capture_output=True, text=True, check=False).stdout
    return "--exchange" in out


def _overlay(golden: GuestGolden, dest: Path, systemd_major: int) -> None:
    """The files dracut copies over its own: the golden units and fstab, the importer, the mv shim."""
    for path, text in initrd_files(golden, read_import_script(), systemd_major).items():
        target = dest / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(0o755 if "/bin/" in path else 0o644)
    for name in golden.units:
        for link_dir in install_links(golden, name):
            wants = dest / "etc/systemd/system" / link_dir
            wants.mkdir(parents=True, exist_ok=True)
            (wants / name).symlink_to(f"../{name}")
    if not coreutils_has_exchange():
        libexec = dest / "usr/libexec/ivm"
        libexec.mkdir(parents=True, exist_ok=True)
        real_mv = shutil.which("mv")
        if real_mv is None or shutil.which("gcc") is None:
            raise StandinError("coreutils' mv lacks --exchange and gcc is missing to build the shim")
        shutil.copy2(Path(real_mv).resolve(), libexec / "mv.coreutils")
        (dest / "usr/bin").mkdir(parents=True, exist_ok=True)
        run("gcc", "-static", "-O2", "-o", str(dest / "usr/bin/mv"), str(MV_SHIM))


def build_initrd(kernel: Kernel, golden: GuestGolden, systemd_major: int, work: Path, dest: Path) -> Path:
    """Write an uncompressed dracut initrd for `kernel` to `dest`."""
    overlay = work / "initrd-overlay"
    _overlay(golden, overlay, systemd_major)
    run(
        "dracut",
        "--quiet",
        "--force",
        "--no-hostonly",
        "--no-hostonly-cmdline",
        "--no-compress",
        "--kver",
        kernel.version,
        "--kmoddir",
        str(kernel.modules),
        "--modules",
        " ".join(DRACUT_MODULES),
        "--add-drivers",
        " ".join(DRIVERS),
        "--install",
        " ".join(TOOLS),
        "--include",
        str(overlay),
        "/",
        str(dest),
    )
    return dest
