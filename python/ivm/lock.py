"""A per-VM lock so that two ivm runs never work on the same VM at once."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ivm.errors import ToolError

log = logging.getLogger("ivm.lock")


def lock_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if os.geteuid() == 0:
        return Path("/run/lock/ivm")
    if runtime:
        return Path(runtime) / "ivm"
    return Path.home() / ".cache" / "ivm" / "locks"


@contextmanager
def resource_lock(uri: str, name: str, wait: bool = False) -> Iterator[None]:
    """Hold the lock of `name` (a VM, or `_`-prefixed shared work) on `uri`; fail at once (exit 1)
    if another run holds it, or with `wait`, wait for it (for shared work such as a base import,
    which the holder finishes for us).

    flock is released by the kernel when the process dies, so a killed run never leaves it stuck.
    """
    directory = lock_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    tag = hashlib.sha256(uri.encode()).hexdigest()[:12]
    path = directory / f"{tag}-{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            if wait:
                log.info("waiting for ivm (pid %s) to finish with %s", holder, name)
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                raise ToolError(
                    f"{name} is busy: ivm (pid {holder}) is already working on it",
                    "wait for that run to finish, then try again",
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
