"""ivm's runtime directory (locks, ssh's known_hosts): private to the user, checked before use.

Root uses /run/ivm (only root can create it); other users $XDG_RUNTIME_DIR/ivm, else /tmp/ivm-UID.
The directory is created 0700 and must be a real directory owned by the user and writable by
nobody else; files in it are opened relative to a descriptor of it, never through a symlink.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from ivm.errors import ToolError

RUN_ROOT = Path("/run")
TMP_ROOT = Path("/tmp")  # noqa: S108 -- a per-user 0700 directory, created and owner-checked
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")


def uri_tag(uri: str) -> str:
    """A short tag naming a hypervisor URI in file names."""
    return hashlib.sha256(uri.encode()).hexdigest()[:12]


def file_name(uri: str, name: str, suffix: str) -> str:
    """`<uri tag>-<name><suffix>`; a name that is not a plain file name is replaced by its hash."""
    safe = name if _SAFE_NAME.fullmatch(name.lstrip("_")) else hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{uri_tag(uri)}-{safe}{suffix}"


def candidates() -> list[Path]:
    """Where the runtime directory may be, best first."""
    if os.geteuid() == 0:
        return [RUN_ROOT / "ivm"]
    found = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_absolute():
        found.append(Path(runtime) / "ivm")
    found.append(TMP_ROOT / f"ivm-{os.geteuid()}")
    return found


@dataclass(frozen=True)
class RuntimeDir:
    """The checked directory and an open descriptor of it: files are opened relative to it."""

    path: Path
    fd: int

    def open(self, name: str, flags: int) -> int:
        """Open `name` in it, never through a symlink; it must be our own regular file."""
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self.fd)
        except OSError as e:
            raise ToolError(
                f"cannot open {self.path / name}: {e.strerror}", "remove it; ivm recreates it"
            ) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            os.close(fd)
            raise ToolError(
                f"{self.path / name} is not a regular file of yours", "remove it; ivm recreates it"
            )
        return fd

    def write(self, name: str, data: bytes) -> Path:
        """Replace `name` atomically (a new file renamed over it); its path."""
        tmp = f".{name}.{os.getpid()}"
        with suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=self.fd)
        fd = self.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        return self.path / name


@contextmanager
def runtime_dir() -> Iterator[RuntimeDir]:
    """The runtime directory, open (closed on exit).

    A candidate that cannot be made (a home or runtime dir that is missing or read-only) gives way
    to the next; one that exists but is unsafe stops ivm, since someone else may have planted it.
    """
    reasons = []
    for path in candidates():
        try:
            fd = open_private_dir(path)
        except OSError as e:
            reasons.append(f"{path}: {e.strerror or e}")
            continue
        try:
            yield RuntimeDir(path, fd)
        finally:
            os.close(fd)
        return
    raise ToolError(
        f"ivm has no runtime directory for its locks ({'; '.join(reasons)})",
        "set XDG_RUNTIME_DIR to an existing directory only you can write",
    )


def open_private_dir(path: Path) -> int:
    """Create `path` 0700 if absent, check it, return an O_DIRECTORY descriptor of it.

    OSError: it cannot be made or opened (the caller tries elsewhere); ToolError: it is unsafe.
    """
    try:
        path.mkdir(mode=0o700)
        created = True
    except FileExistsError:
        created = False
    before = os.lstat(path)
    if stat.S_ISLNK(before.st_mode):
        _refuse(path, "is a symbolic link")
    if not stat.S_ISDIR(before.st_mode):
        _refuse(path, "is not a directory")
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != (before.st_dev, before.st_ino):
            _refuse(path, "was replaced while ivm checked it")
        if created:
            os.fchmod(fd, 0o700)  # the umask must not widen or narrow it
        elif info.st_uid != os.geteuid():
            _refuse(path, f"is owned by uid {info.st_uid}, not by uid {os.geteuid()} running ivm")
        elif info.st_mode & 0o022:
            _refuse(path, f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse(path: Path, why: str) -> NoReturn:
    raise ToolError(
        f"refusing to use {path}: it {why}",
        "remove it: another user may have made it; ivm then makes its own, private one",
    )
