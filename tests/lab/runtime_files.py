"""The files ivm keeps in its runtime directory (/run/ivm for root) for a test's names: lock files and
pinned host keys. ivm never removes them (a lock file outlives its run by design), so a test's
teardown does, for the names that test made, and nothing else: other runs share the directory."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterable
from pathlib import Path

from ivm.runtime_dir import candidates, file_name

SUFFIXES = (".lock", ".known_hosts")


def runtime_files(uris: Iterable[str], names: Iterable[str]) -> list[Path]:
    """The files ivm keeps for `names` on `uris` that exist now."""
    wanted = {file_name(u, n, s) for u in set(uris) for n in set(names) for s in SUFFIXES}
    return sorted(d / f for d in candidates() if d.is_dir() for f in wanted if (d / f).is_file())


def remove_runtime_files(uris: Iterable[str], names: Iterable[str]) -> list[Path]:
    """Remove them; return the lock files left because a running process holds them."""
    held = []
    for path in runtime_files(uris, names):
        if not _remove_unless_held(path):
            held.append(path)
    return held


def _remove_unless_held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False  # unlinking a held lock would let a second run take a new one at once
            raise
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return True
    finally:
        os.close(fd)
