"""A per-VM lock so that two ivm runs never work on the same VM at once."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from ivm.errors import ToolError
from ivm.runtime_dir import file_name, runtime_dir

log = logging.getLogger("ivm.lock")


@contextmanager
def resource_lock(uri: str, name: str, wait: bool = False) -> Iterator[None]:
    """Hold the lock of `name` (a VM, or `_`-prefixed shared work) on `uri`; fail at once (exit 1)
    if another run holds it, or with `wait`, wait for it (for shared work such as a base import,
    which the holder finishes for us).

    flock is released by the kernel when the process dies, so a killed run never leaves it stuck.
    libvirt's test driver lives inside this process, so nothing is shared to lock there.
    """
    if uri.startswith("test:"):
        yield
        return
    with runtime_dir() as directory:
        fd = directory.open(file_name(uri, name, ".lock"), os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            holder = holder_of(os.pread(fd, 32, 0))
            if wait:
                log.info("waiting for %s to finish with %s", holder, name)
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                raise ToolError(
                    f"{name} is busy: {holder} is already working on it",
                    "wait for that run to finish, then try again",
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def holder_of(content: bytes) -> str:
    """Who holds a lock, from its file: a pid in digits, nothing else reaches the terminal."""
    text = content.decode("ascii", errors="replace").strip()
    return f"ivm (pid {text})" if re.fullmatch(r"[0-9]{1,10}", text) else "another ivm run"
