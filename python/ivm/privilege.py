"""Acting for the project's owner when ivm runs as root (sudo, su, setpriv) in someone else's tree.

Nix refuses to evaluate a git repository owned by another user ("repository path … is not owned by
current user", the check git applies since CVE-2022-24765), so Nix runs as the project's owner; and
what ivm writes into the project is given to the owner of the folder it lands in, so that user can
still edit, commit and delete it. Run as anyone but root, nothing here changes anything.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ivm.errors import ToolError, UsageError
from ivm.hypervisor.uri import is_session

# Per-user settings a root shell may carry; the owner's own defaults apply instead.
_ROOTS_DIRS = ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR")


@dataclass(frozen=True)
class Account:
    """A local user a subprocess runs as."""

    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...]

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` with the identity variables of this user (Nix keeps its cache under HOME)."""
        env = {k: v for k, v in base.items() if k not in _ROOTS_DIRS}
        env.update(HOME=self.home, USER=self.name, LOGNAME=self.name)
        return env

    def search_path(self) -> tuple[str, ...]:
        """Where this user's Nix lives when root's PATH (sudo's secure_path) lacks it."""
        return (
            f"{self.home}/.nix-profile/bin",
            f"/etc/profiles/per-user/{self.name}/bin",
            "/nix/var/nix/profiles/default/bin",
            "/run/current-system/sw/bin",
        )


def owner_account(project: Path) -> Account | None:
    """The account Nix must run as for `project`: its owner, when ivm is root and the owner is not.
    None when Nix may run as ivm itself."""
    if os.geteuid() != 0:
        return None
    try:
        uid = project.stat().st_uid
    except OSError:
        return None
    if uid == 0:
        return None
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        raise ToolError(
            f"{project} belongs to uid {uid}, which has no account here, and Nix refuses to work "
            "as root on another user's repository",
            "run ivm as the project's owner (with SUDO= for the Justfile), not as root",
        ) from None
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, groups)


def hand_over(target: int | Path, directory: Path) -> None:
    """Give `target` (an open file descriptor, or a path in a folder only ivm can write) to the
    owner and group of `directory`, when ivm is root and they are someone else."""
    if os.geteuid() != 0:
        return
    info = directory.stat()
    if info.st_uid == 0 and info.st_gid == 0:
        return
    if isinstance(target, int):
        os.fchown(target, info.st_uid, info.st_gid)
    else:
        os.chown(target, info.st_uid, info.st_gid, follow_symlinks=False)


def make_dirs(directory: Path) -> None:
    """`mkdir -p`, each folder made given to the owner of the folder it is made in."""
    missing = [d for d in (directory, *directory.parents) if not d.exists() and not d.is_symlink()]
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs, not ours to chown
        # Opened without following links: the owner of the parent could swap the new folder.
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            hand_over(fd, d.parent)
        finally:
            os.close(fd)


def check_uri_for_user(uri: str, euid: int | None = None) -> None:
    """Refuse qemu:///session as root before connecting: its disks would land under /root, which
    QEMU cannot read, and the VM would fail only at start, with everything else already made."""
    if (os.geteuid() if euid is None else euid) == 0 and is_session(uri):
        raise UsageError(
            f"{uri} as root would keep the VMs' disks under /root, which QEMU cannot read",
            "as root use qemu:///system (the default: unset LIBVIRT_DEFAULT_URI or pass "
            "--connect qemu:///system), or run ivm as your own user for qemu:///session",
        )
