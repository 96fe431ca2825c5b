"""Assemble the stand-in boot disk: a GPT with one FAT ESP holding systemd-boot, kernel and initrd."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from .initrd import build_initrd
from .kernel import StandinError, fetch_kernel, run

SYSTEMD_BOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MIB = 1024 * 1024
# mkfs.vfat and sfdisk live in sbin, which a non-root PATH lacks on Debian.
_TOOL_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _tool(name: str) -> str:
    found = shutil.which(name, path=_TOOL_PATH)
    if found is None:
        raise StandinError(f"{name} not found: install the stand-in's APT_PACKAGES")
    return found


def _esp(files: dict[str, Path], dest: Path) -> int:
    """Write a FAT filesystem holding `files` (ESP path -> host file) with mtools; return its size."""
    size_mib = sum(p.stat().st_size for p in files.values()) // MIB + 8  # room for FAT and dirs
    run(_tool("mkfs.vfat"), "-C", "-n", "ESP", str(dest), str(size_mib * 1024))
    # Shorter first, so every directory comes after its parent.
    dirs = sorted({str(d) for target in files for d in Path(target).parents} - {"."}, key=len)
    run(_tool("mmd"), "-i", str(dest), *(f"::/{d}" for d in dirs))
    for target, source in files.items():
        run(_tool("mcopy"), "-i", str(dest), str(source), f"::/{target}")
    return size_mib * MIB


def build_standin_image(dest: Path, marker: str, *, stay: bool = False, agent: bool = False) -> Path:
    """Write a raw GPT disk image at `dest` that boots (UEFI) into the reporting /init; return `dest`.

    `marker` reaches the guest as `ivm.marker=` on the kernel command line, so tests can tell
    which image a VM booted. `stay` keeps the guest running after its report (it ignores ACPI,
    so only a forced power-off stops it); `agent` also answers QEMU guest-agent pings.
    """
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", marker):
        raise ValueError(f"marker {marker!r}: use 1-64 of A-Z a-z 0-9 . _ -")
    if not SYSTEMD_BOOT.is_file():
        raise StandinError(f"{SYSTEMD_BOOT} missing: install systemd-boot-efi")
    kernel = fetch_kernel()
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Work beside `dest`, so the finished image is renamed into place, never seen half-written.
    with tempfile.TemporaryDirectory(prefix=".standin-", dir=dest.parent) as tmp:
        work = Path(tmp)
        (work / "loader.conf").write_text("default ivm.conf\ntimeout 0\nconsole-mode keep\n")
        (work / "ivm.conf").write_text(
            "title ivm stand-in guest\nlinux /vmlinuz\ninitrd /initrd\n"
            f"options console=ttyS0 ivm.marker={marker} ivm.stay={int(stay)} ivm.agent={int(agent)}\n"
        )
        files = {
            "EFI/BOOT/BOOTX64.EFI": SYSTEMD_BOOT,
            "loader/loader.conf": work / "loader.conf",
            "loader/entries/ivm.conf": work / "ivm.conf",
            "vmlinuz": kernel.vmlinuz,
            "initrd": build_initrd(kernel, work / "initrd"),
        }
        esp_size = _esp(files, work / "esp.img")
        disk = work / "disk.img"
        # 1 MiB before the ESP for the primary GPT, 1 MiB after for the backup.
        with disk.open("wb") as f:
            f.truncate(esp_size + 2 * MIB)
        script = f'label: gpt\nstart=2048, size={esp_size // 512}, type={ESP_TYPE}, name="ESP"\n'
        run(_tool("sfdisk"), "-q", "--no-reread", "--no-tell-kernel", str(disk), stdin=script)
        with disk.open("r+b") as out, (work / "esp.img").open("rb") as esp:
            out.seek(MIB)
            shutil.copyfileobj(esp, out, MIB)
        disk.replace(dest)
    return dest
