"""The image hash cache: a second look at the same file reads none of its data; a changed file,
even one whose size and mtime were put back, is hashed again; an unsafe cache is never used."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ivm import hash_cache, image


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the image's data was hashed."""
    calls: list[int] = []
    real = image._hash_data

    def counting(fd: int) -> str:
        calls.append(fd)
        return real(fd)

    monkeypatch.setattr(image, "_hash_data", counting)
    return calls


def settled(path: Path, content: bytes) -> Path:
    """A file last changed longer ago than the racy window, as an image usually is."""
    path.write_bytes(content)
    time.sleep(hash_cache.RACY_NS / 1e9 + 0.1)  # a wait, not a timed assertion
    return path


def test_second_hash_reads_nothing(cache_home: Path, reads: list[int], tmp_path: Path) -> None:
    img = settled(tmp_path / "a.raw", os.urandom(3 * 1024 * 1024))
    first = image.content_hash(img)
    assert image.content_hash(img) == first
    assert len(reads) == 1
    assert oct((cache_home / "ivm" / "image-hashes").stat().st_mode & 0o777) == "0o700"


def test_same_size_and_mtime_but_new_content_is_hashed_again(
    cache_home: Path, reads: list[int], tmp_path: Path
) -> None:
    img = settled(tmp_path / "a.raw", b"A" * 4096)
    old = img.stat()
    first = image.content_hash(img)
    with img.open("r+b") as f:  # same size, same inode
        f.write(b"B" * 4096)
    os.utime(img, ns=(old.st_atime_ns, old.st_mtime_ns))  # mtime put back: only ctime tells
    new = img.stat()
    assert (new.st_size, new.st_mtime_ns, new.st_ino) == (old.st_size, old.st_mtime_ns, old.st_ino)
    second = image.content_hash(img)
    assert len(reads) == 2
    assert second != first
    with img.open("rb") as f:
        assert second == image._hash_data(f.fileno())


def test_a_file_changed_just_now_is_not_remembered(
    cache_home: Path, reads: list[int], tmp_path: Path
) -> None:
    img = tmp_path / "fresh.raw"
    img.write_bytes(b"x" * 8192)
    image.content_hash(img)
    image.content_hash(img)
    assert len(reads) == 2


def test_copy_is_another_file(cache_home: Path, reads: list[int], tmp_path: Path) -> None:
    a = settled(tmp_path / "a.raw", b"same" * 1024)
    image.content_hash(a)
    b = tmp_path / "b.raw"
    b.write_bytes(a.read_bytes())
    assert image.content_hash(b) == image.content_hash(a)
    assert len(reads) == 2  # b is a new inode: hashed; a is remembered


@pytest.mark.parametrize("damage", ["other-file", "garbage", "symlink"])
def test_a_tampered_entry_is_not_trusted(
    cache_home: Path, reads: list[int], tmp_path: Path, damage: str
) -> None:
    img = settled(tmp_path / "a.raw", b"real" * 1024)
    true_hash = image.content_hash(img)
    [entry] = [p for p in (cache_home / "ivm" / "image-hashes").iterdir()]
    entry.unlink()
    if damage == "other-file":
        entry.write_text(f"{hash_cache.FORMAT} 1 2 3 4 5 {'f' * 32}\n")
    elif damage == "garbage":
        entry.write_text("ivm-image-hash-v1 " + "z" * 40)
    else:
        target = tmp_path / "planted"
        key = hash_cache.key_of(img.stat())
        target.write_text(f"{hash_cache.FORMAT} {' '.join(map(str, key))} {'0' * 32}\n")
        entry.symlink_to(target)
    assert image.content_hash(img) == true_hash
    assert len(reads) == 2


@pytest.mark.parametrize("unsafe", ["group-writable", "symlink"])
def test_an_unsafe_cache_directory_is_not_used(
    cache_home: Path, reads: list[int], tmp_path: Path, unsafe: str, caplog: pytest.LogCaptureFixture
) -> None:
    img = settled(tmp_path / "a.raw", b"data" * 1024)
    where = cache_home / "ivm" / "image-hashes"
    where.parent.mkdir(parents=True)
    if unsafe == "group-writable":
        where.mkdir()
        where.chmod(0o770)
    else:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        where.symlink_to(elsewhere)
    image.content_hash(img)
    image.content_hash(img)
    assert len(reads) == 2
    assert "not using the image hash cache" in caplog.text
    assert not any(where.iterdir())


def test_no_cache_where_none_can_be_made(
    monkeypatch: pytest.MonkeyPatch, reads: list[int], tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # a file where the directory should be
    img = settled(tmp_path / "a.raw", b"data" * 1024)
    assert image.content_hash(img) == image.content_hash(img)
    assert len(reads) == 2
