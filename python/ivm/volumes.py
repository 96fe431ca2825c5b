"""Names of everything ivm keeps in its storage pool (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_POOL = "ivm"
BASE_RE = re.compile(r"base-([0-9a-z]{32})\.qcow2")


@dataclass(frozen=True)
class VmVolumes:
    boot: str  # copy-on-write overlay of the base, attached read-only
    var: str  # the VM's persistent /var: never overwritten, deleted only on request
    identity: str  # small ext4 image with the VM's identity files, rebuilt on upgrade

    def all(self) -> tuple[str, str, str]:
        return (self.boot, self.var, self.identity)


def vm_volumes(name: str) -> VmVolumes:
    return VmVolumes(f"{name}-boot.qcow2", f"{name}-var.qcow2", f"{name}-identity.img")


def base_volume(base_hash: str) -> str:
    return f"base-{base_hash}.qcow2"


def base_hash_of(volume_name: str) -> str | None:
    """The hash in a base volume's name, or None if the name is not a base volume's."""
    match = BASE_RE.fullmatch(volume_name)
    return match.group(1) if match else None
