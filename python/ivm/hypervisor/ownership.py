"""Owner and mode of a VM's read-only disks in a local pool: what they must be, drift, repair.

The shared base and the boot overlay belong to the pool's owner, mode 0644: QEMU reads them and
no VM writes them. The identity image is 0600, owned by the pool's owner or by the VM's own QEMU
uid (libvirt leaves it so after shutdown). Anything else (left by libvirt before ivm kept these
disks from being relabelled, or by hand) is drift: `status` reports it, `start` and `stop` repair it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ivm.errors import ToolError
from ivm.hypervisor.storage import Storage
from ivm.hypervisor.uri import is_local
from ivm.volumes import VmVolumes


@dataclass(frozen=True)
class Expected:
    volume: str
    mode: int
    owners: frozenset[int]


@dataclass(frozen=True)
class Drift:
    expected: Expected
    path: Path
    uid: int
    mode: int

    def line(self) -> str:
        owners = " or ".join(str(u) for u in sorted(self.expected.owners))
        return (
            f"{self.expected.volume}: owner uid {self.uid} mode {self.mode:04o}, "
            f"expected uid {owners} mode {self.expected.mode:04o}"
        )


def expected(vols: VmVolumes, base: str | None, owner: int, own_uid: int | None) -> list[Expected]:
    """What each read-only disk of a VM must look like on disk. Pure."""
    shared = frozenset({owner})
    identity = shared | ({own_uid} if own_uid is not None else set())
    files = [Expected(vols.boot, 0o644, shared), Expected(vols.identity, 0o600, identity)]
    if base is not None:
        files.append(Expected(base, 0o644, shared))
    return files


def judge(want: Expected, path: Path, info: os.stat_result) -> Drift | None:
    """Drift of one file, or None when it is as expected. Pure."""
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid in want.owners and mode == want.mode and stat.S_ISREG(info.st_mode):
        return None
    return Drift(want, path, info.st_uid, mode)


def find_drift(
    storage: Storage, uri: str, vols: VmVolumes, own_uid: int | None, base: str | None = None
) -> list[Drift]:
    """Drift of a VM's read-only disks; nothing to say for a remote pool (its files are not here).
    BASE is the base volume's name when the caller knows it (the domain's metadata names it); else
    it is read from the boot overlay's backing file."""
    if not is_local(uri) or uri.startswith("test:") or storage.volume(vols.boot) is None:
        return []
    folder = Path(storage.directory())
    if base is None:
        backing = storage.backing_path(vols.boot)
        base = Path(backing).name if backing else None
    try:
        owner = folder.stat().st_uid  # the pool directory's owner: root for qemu:///system
    except OSError:
        return []  # not this machine's view of the pool (or not ours to read): nothing to judge
    found: list[Drift] = []
    for want in expected(vols, base, owner, own_uid):
        path = folder / want.volume
        try:
            info = path.lstat()
        except OSError:
            continue
        drift = judge(want, path, info)
        if drift is not None:
            found.append(drift)
    return found


def repair(drifts: list[Drift]) -> None:
    """Give each drifted file back to the pool's owner with its expected mode."""
    for d in drifts:
        parent = d.path.parent.stat()
        try:
            if not stat.S_ISREG(d.path.lstat().st_mode):
                raise ToolError(f"{d.path} is not a regular file", "remove it and run `ivm create` again")
            fd = os.open(d.path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fchown(fd, parent.st_uid, parent.st_gid)
                os.fchmod(fd, d.expected.mode)
            finally:
                os.close(fd)
        except PermissionError:
            raise ToolError(
                f"cannot repair the owner and mode of {d.path} ({d.line()})",
                "run the command as root (the pool belongs to the libvirt daemon's user)",
            ) from None
