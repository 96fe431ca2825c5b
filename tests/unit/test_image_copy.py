"""The private copy a local import hands to the daemon: same bytes, holes kept, a new file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ivm.image import private_copy

MIB = 1024**2


def test_copy_is_exact_and_sparse(tmp_path: Path) -> None:
    src = tmp_path / "image.qcow2"
    with src.open("wb") as f:
        f.write(os.urandom(MIB))
        f.seek(40 * MIB)
        f.write(os.urandom(MIB))
        f.truncate(64 * MIB)
    dst = private_copy(src, tmp_path / "copy.qcow2")
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_blocks * 512 < 8 * MIB
    assert dst.stat().st_ino != src.stat().st_ino


def test_never_overwrites(tmp_path: Path) -> None:
    src, dst = tmp_path / "a", tmp_path / "b"
    src.write_bytes(b"new")
    dst.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        private_copy(src, dst)
    assert dst.read_bytes() == b"old"
