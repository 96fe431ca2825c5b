"""Base import: a 1 GiB sparse raw image into the pool, versus `cp --sparse=always` of the same file
onto the same disk. ivm checks and hashes the image, converts raw to qcow2 in a temporary directory,
then streams that file into the pool through libvirt; the parts are timed through its library too."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.lab import BenchError, Lab
from bench.stats import Figure, clock
from ivm.hypervisor.storage import Storage
from ivm.image import as_qcow2, inspect
from ivm.ops.provision import HEADER
from ivm.volumes import base_volume

MIB = 1024**2
SIZE = 1024 * MIB
EXTENT = 16 * MIB  # incompressible data extents, one every 64 MiB: 256 MiB of data in all
STRIDE = 64 * MIB


def sparse_image(standin: Path, dest: Path) -> Path:
    """A bootable 1 GiB raw disk: the stand-in at its start (partition table and ESP), random data
    extents after it, holes in between."""
    with dest.open("wb") as out:
        out.write(standin.read_bytes())
        for offset in range(STRIDE // 2, SIZE, STRIDE):
            out.seek(offset)
            out.write(os.urandom(EXTENT))
        out.truncate(SIZE)
    return dest


def cp_sparse(source: Path, dest: Path) -> float:
    with clock() as c:
        done = subprocess.run(
            ["cp", "--sparse=always", str(source), str(dest)], capture_output=True, text=True, check=False
        )
    if done.returncode != 0:
        raise BenchError(f"cp failed: {done.stderr.strip()}")
    dest.unlink()
    return c.seconds


def parts(lab: Lab, source: Path) -> dict[str, float]:
    """ivm's import steps, called as `create` calls them (ivm/ops/provision.py import_base)."""
    storage = Storage(lab.conn, lab.pool, str(lab.pool_path))
    with clock() as check:
        base = inspect(source)
    with tempfile.TemporaryDirectory(prefix="ivm-base-") as tmp:
        with clock() as convert:
            qcow2 = as_qcow2(base, Path(tmp))
        with clock() as upload:
            storage.import_file(base_volume(base.hash), qcow2, header=HEADER, mode="0644")
    lab.delete_volume(base_volume(base.hash))
    return {
        "check and hash (qemu-img info, content hash)": check.seconds,
        "convert raw to qcow2 (qemu-img convert)": convert.seconds,
        "upload into the pool (libvirt stream)": upload.seconds,
    }


def run(lab: Lab, runs: int) -> dict[str, Any]:
    source = sparse_image(lab.image("A"), lab.work / "big.raw")
    data_bytes = source.stat().st_blocks * 512
    ivm_s: list[float] = []
    cp_s: list[float] = []
    part_s: dict[str, list[float]] = {}
    names = [lab.name(f"i{r}") for r in range(runs)]
    lab.add_machines(names)
    for name in names:
        before = set(lab.base_volumes())
        ivm_s.append(lab.ivm("create", name, "--image", str(source))[1])
        new_bases = set(lab.base_volumes()) - before
        if len(new_bases) != 1:
            raise BenchError(f"ivm create imported {len(new_bases)} bases, expected one")
        qcow2_bytes = sum(lab.allocated(sorted(new_bases)).values())
        lab.remove_vms([name])
        for vol in new_bases:
            lab.delete_volume(vol)
        cp_s.append(cp_sparse(source, lab.pool_path / "cp-copy.raw"))
        for step, seconds in parts(lab, source).items():
            part_s.setdefault(step, []).append(seconds)
    source.unlink()
    ivm, cp = Figure.of(ivm_s), Figure.of(cp_s)
    return {
        "image": {"apparent_bytes": SIZE, "data_bytes": data_bytes, "base_volume_bytes": qcow2_bytes},
        "ivm_create": ivm,
        "cp_sparse": cp,
        "ratio": ivm.median / cp.median,
        "parts": {k: Figure.of(v) for k, v in part_s.items()},
    }
