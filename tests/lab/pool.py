"""Scratch directories for libvirt dir pools that QEMU (user libvirt-qemu) can reach."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# pytest's own tmp dirs (/tmp/pytest-of-root, 0700) are closed to the libvirt-qemu user.
POOL_BASE = Path("/var/lib/libvirt/images")


@contextmanager
def scratch_pool_dir(base: Path | None = None) -> Iterator[Path]:
    """A new 0755 directory under `base` ($IVM_TEST_POOL_BASE or POOL_BASE), removed afterwards."""
    parent = base or Path(os.environ.get("IVM_TEST_POOL_BASE", POOL_BASE))
    path = Path(tempfile.mkdtemp(prefix="ivm-test-", dir=parent))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
