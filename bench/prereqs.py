"""What the bench needs, checked before anything runs; it installs nothing, it says what to install."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

# tool -> what provides it (Debian package names; the bench runs where the integration tests run).
TOOLS = {
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "virsh": "libvirt-clients",
    "guestfish": "libguestfs-tools",
    "virt-install": "virtinst",  # the `up` case's baseline
    "xorrisofs": "xorriso",  # virt-install's cloud-init seed ISO
    "mkfs.ext4": "e2fsprogs",
    "ssh-keygen": "openssh-client",
    "lscpu": "util-linux",
    # the stand-in guest image (tests/lab/standin)
    "busybox": "busybox-static",
    "mkfs.vfat": "dosfstools",
    "sfdisk": "fdisk",
    "mcopy": "mtools",
}
FILES = {Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi"): "systemd-boot-efi"}
# module -> what `pip install` takes for it
MODULES = {"libvirt": "libvirt-python", "matplotlib": "matplotlib", "ivm": "-e ."}
SBIN = ("/usr/sbin", "/sbin")


def find_tool(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))


def missing() -> list[str]:
    """One line per missing prerequisite, each saying how to get it; empty when all is there."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("run as root: the bench uses qemu:///system and pools in /var/lib/libvirt/images")
    packages = sorted({pkg for tool, pkg in TOOLS.items() if find_tool(tool) is None})
    packages += sorted({pkg for path, pkg in FILES.items() if not path.is_file()})
    if packages:
        problems.append(f"missing programs: apt-get install {' '.join(packages)}")
    if not (find_tool("libvirtd") or find_tool("virtqemud")):
        problems.append("no libvirt daemon installed: apt-get install libvirt-daemon-system")
    modules = [pip for mod, pip in MODULES.items() if importlib.util.find_spec(mod) is None]
    if modules:
        problems.append(
            f"missing Python packages: .venv/bin/pip install {' '.join(modules)} "
            "(libvirt-python builds with libvirt-dev pkg-config gcc python3-dev)"
        )
    return problems
