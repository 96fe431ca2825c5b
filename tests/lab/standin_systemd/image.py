"""Assemble the systemd stand-in's disk: GPT with an ESP (systemd-boot, kernel, dracut initrd) and
an erofs root partition labelled as the guest's, cached under a key of every input."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from tests.lab.standin.image import ESP_TYPE, MIB, SYSTEMD_BOOT, _esp, _tool
from tests.lab.standin.kernel import Kernel, StandinError, cache_dir, fetch_kernel, run

from . import golden as golden_files
from .golden import GuestGolden
from .initrd import build_initrd
from .mapping import IMPORT_SCRIPT, kernel_params
from .rootfs import PACKAGES, base_tarball, shape_root, suite, systemd_major

ROOT_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"  # Linux root (x86-64), Discoverable Partitions
HERE = Path(__file__).parent


def _cache_key(kernel: Kernel, golden: GuestGolden, marker: str) -> str:
    """Every input of the image: sources of this package, golden files, import script, kernel, suite."""
    h = hashlib.sha256()
    goldens = [p for d in (golden_files.GUEST, golden_files.GOLDEN) for p in d.rglob("*") if p.is_file()]
    for path in sorted({*HERE.glob("*.py"), *HERE.glob("*.c"), IMPORT_SCRIPT, *goldens}):
        h.update(str(path.relative_to(golden_files.REPO)).encode() + b"\0" + path.read_bytes())
    h.update(f"{kernel.version} {suite()} {' '.join(PACKAGES)} {marker}".encode())
    return h.hexdigest()[:20]


def _depmod(kernel: Kernel) -> None:
    """Debian's package ships no modules.dep; dracut and the root need it."""
    if not (kernel.modules / "modules.dep").exists():
        # modules = BASE/lib/modules/VERSION or BASE/usr/lib/modules/VERSION; depmod -b wants BASE.
        up = kernel.modules.parents
        base = up[3] if up[2].name == "usr" else up[2]
        run("depmod", "-b", str(base), kernel.version)


def build_systemd_standin(dest: Path, marker: str = "A") -> Path:
    """Write the stand-in's raw disk image to `dest` (a copy of the cached one); return `dest`."""
    if not SYSTEMD_BOOT.is_file():
        raise StandinError(f"{SYSTEMD_BOOT} missing: install systemd-boot-efi")
    golden = golden_files.load()
    kernel = fetch_kernel()
    _depmod(kernel)
    cached = cache_dir() / f"systemd-standin-{_cache_key(kernel, golden, marker)}.raw"
    if not cached.is_file():
        _build(kernel, golden, marker, cached)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, dest)
    return dest


def _build(kernel: Kernel, golden: GuestGolden, marker: str, dest: Path) -> None:
    tarball = base_tarball()
    with tempfile.TemporaryDirectory(prefix=".systemd-standin-", dir=dest.parent) as tmp:
        work = Path(tmp)
        root = work / "root"
        root.mkdir()
        run("tar", "--numeric-owner", "-xpf", str(tarball), "-C", str(root))
        shape_root(root, golden, kernel.modules, kernel.version)
        _write_marker(root, marker)
        run("mkfs.erofs", "-zlz4", "-T0", str(work / "root.erofs"), str(root))
        params = " ".join(kernel_params(golden, systemd_major(root)))
        (work / "loader.conf").write_text("default ivm.conf\ntimeout 0\nconsole-mode keep\n")
        (work / "ivm.conf").write_text(
            f"title ivm systemd stand-in\nlinux /vmlinuz\ninitrd /initrd\noptions {params}\n"
        )
        esp_size = _esp(
            {
                "EFI/BOOT/BOOTX64.EFI": SYSTEMD_BOOT,
                "loader/loader.conf": work / "loader.conf",
                "loader/entries/ivm.conf": work / "ivm.conf",
                "vmlinuz": kernel.vmlinuz,
                "initrd": build_initrd(kernel, golden, systemd_major(root), work, work / "initrd"),
            },
            work / "esp.img",
        )
        root_size = -(-(work / "root.erofs").stat().st_size // MIB) * MIB
        disk = work / "disk.img"
        with disk.open("wb") as f:
            f.truncate(esp_size + root_size + 2 * MIB)
        label = golden.fstab.split()[0].rsplit("/", 1)[-1]
        script = (
            "label: gpt\n"
            f'start=2048, size={esp_size // 512}, type={ESP_TYPE}, name="ESP"\n'
            f'size={root_size // 512}, type={ROOT_TYPE}, name="{label}"\n'
        )
        run(_tool("sfdisk"), "-q", "--no-reread", "--no-tell-kernel", str(disk), stdin=script)
        with disk.open("r+b") as out:
            for offset, part in ((MIB, work / "esp.img"), (MIB + esp_size, work / "root.erofs")):
                out.seek(offset)
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, MIB)
        disk.replace(dest)


def _write_marker(root: Path, marker: str) -> None:
    """/usr/share/ivm/marker names the image, so a test can tell which base a VM booted."""
    (root / "usr/share/ivm").mkdir(parents=True, exist_ok=True)
    (root / "usr/share/ivm/marker").write_text(f"{marker}\n")
