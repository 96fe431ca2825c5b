"""Content hashes of `--image` files, remembered by what identifies the file on disk, so an image is
read once however many VMs are made from it.

An entry is keyed by device, inode, size, mtime and ctime (in ns). ctime cannot be set by a user
and changes on every write, so a file rewritten with its size and mtime restored is still hashed
again. A file changed within the last RACY_NS when it was hashed is not remembered: a write in
the same timestamp tick could leave all five fields as they were.

The cache lives in $XDG_CACHE_HOME/ivm/image-hashes (default ~/.cache/...). It decides which base
a VM boots, so it is used only if it is a real directory owned by the user and writable by
nobody else, and its files are opened relative to it, never through a symlink. A cache that cannot
be made or is unsafe is not used (hashing still works); nothing is ever trusted from it but a
well-formed entry for exactly these five fields.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ivm.errors import ToolError
from ivm.runtime_dir import open_private_dir

log = logging.getLogger("ivm.image")
RACY_NS = 2_000_000_000  # the coarsest file timestamps ivm images may live on (FAT: 2 s)
MAX_ENTRIES = 256  # oldest dropped first: an entry is ~100 bytes, one per image version seen
FORMAT = "ivm-image-hash-v1"
HASH_RE = re.compile(r"[0-9a-f]{32}")

Key = tuple[int, int, int, int, int]


def key_of(info: os.stat_result) -> Key:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "ivm" / "image-hashes"


def cached_hash(path: Path, compute: Callable[[int], str]) -> str:
    """`compute(fd)` of the open file, or what it gave last time for this very file."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        before = os.fstat(fd)
        key = key_of(before)
        entry = _entry_name(key)
        with _open_cache() as cache:
            if cache is not None and (found := _read(cache, entry, key)) is not None:
                log.debug("content hash of %s remembered: %s", path, found)
                return found
        digest = compute(fd)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    changed_lately = time.time_ns() - max(after.st_mtime_ns, after.st_ctime_ns) < RACY_NS
    if key_of(after) != key or changed_lately:
        log.debug("not remembering the hash of %s: it changed while or just before it was read", path)
        return digest
    with _open_cache() as cache:
        if cache is not None:
            _write(cache, entry, key, digest)
    return digest


def _entry_name(key: Key) -> str:
    return hashlib.sha256(" ".join(map(str, key)).encode()).hexdigest()[:32]


def _line(key: Key, digest: str) -> str:
    return f"{FORMAT} {' '.join(map(str, key))} {digest}\n"


def _read(cache: int, entry: str, key: Key) -> str | None:
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cache)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_size > 512:
            return None
        text = os.read(fd, 512).decode("ascii", errors="replace")
    finally:
        os.close(fd)
    digest = text.rsplit(" ", 1)[-1].strip()
    if text != _line(key, digest) or not HASH_RE.fullmatch(digest):
        return None  # another file's, or damaged: hash again and overwrite it
    return digest


def _write(cache: int, entry: str, key: Key, digest: str) -> None:
    tmp = f".{entry}.{os.getpid()}"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=cache)
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=cache
        )
        try:
            os.write(fd, _line(key, digest).encode())
        finally:
            os.close(fd)
        os.rename(tmp, entry, src_dir_fd=cache, dst_dir_fd=cache)
        _prune(cache)
    except OSError as e:
        log.debug("could not remember the image hash: %s", e)


def _prune(cache: int) -> None:
    names = [n for n in os.listdir(cache) if HASH_RE.fullmatch(n)]
    if len(names) <= MAX_ENTRIES:
        return
    ages = sorted(names, key=lambda n: os.stat(n, dir_fd=cache, follow_symlinks=False).st_mtime_ns)
    for name in ages[: len(names) - MAX_ENTRIES]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=cache)


@contextmanager
def _open_cache() -> Iterator[int | None]:
    """A descriptor of the cache directory, or None (with the reason logged) if it is not usable."""
    path = cache_dir()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = open_private_dir(path)  # the checks the runtime directory gets: ours, 0700-ish, no link
    except OSError as e:
        log.debug("not using the image hash cache %s: %s", path, e.strerror or e)
        yield None
        return
    except ToolError as e:
        log.warning("not using the image hash cache: %s; %s", e.message, e.hint)
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)
