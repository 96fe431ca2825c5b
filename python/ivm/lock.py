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
from ivm.poll import SYSTEM, Clock, Deadline, poll
from ivm.runtime_dir import file_name, runtime_dir

log = logging.getLogger("ivm.lock")


@contextmanager
def resource_lock(uri: str, name: str, wait: float = 0, clock: Clock = SYSTEM) -> Iterator[None]:
    """Hold the lock of `name` (a VM, or `_`-prefixed shared work) on `uri`; fail at once (exit 1)
    if another run holds it, or with `wait`, wait up to that many seconds for it (for shared work
    such as a base import, which the holder finishes for us).

    flock is released by the kernel when the process dies, so a killed run never leaves it stuck.
    libvirt's test driver lives inside this process, so nothing is shared to lock there.
    """
    if uri.startswith("test:"):
        yield
        return
    with runtime_dir() as directory:
        fd = directory.open(file_name(uri, name, ".lock"), os.O_RDWR | os.O_CREAT)

    def taken() -> bool | None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            return None
        return True

    try:
        if taken() is None:
            holder = holder_of(os.pread(fd, 32, 0))
            if not wait:
                raise ToolError(
                    f"{name} is busy: {holder} is already working on it",
                    "wait for that run to finish, then try again",
                )
            log.info("waiting up to %g s for %s to finish with %s", wait, holder, name)
            what = f"{holder} to finish with {name}"
            if (
                poll(taken, Deadline.after(wait, clock), interval=0.5, what=what, report_every=30, logger=log)
                is None
            ):
                raise ToolError(
                    f"{name} is still busy after {wait:g} s: {holder} is working on it",
                    "if that run is stuck, stop it, then run the command again",
                )
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def holder_of(content: bytes) -> str:
    """Who holds a lock, from its file: a pid in digits, nothing else reaches the terminal."""
    text = content.decode("ascii", errors="replace").strip()
    return f"ivm (pid {text})" if re.fullmatch(r"[0-9]{1,10}", text) else "another ivm run"
