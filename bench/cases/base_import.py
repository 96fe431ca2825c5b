"""Base import: a 1 GiB sparse raw image into the pool, versus `cp --sparse=always` of the same file
onto the same disk. ivm checks and hashes the image (once per version of the file: the hash is
remembered), converts raw to qcow2 in a temporary directory, then has the daemon copy that file
into the pool (a transient pool over the temporary directory and virStorageVolCreateXMLFrom), its
header zeroed until a last small upload. A remote hypervisor (a second daemon on its own socket)
gets the same file as a sparse stream. The parts are timed through ivm's library too."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import libvirt
from tests.lab.second_host import SecondHostError, second_host

from bench.lab import BenchError, Lab
from bench.stats import Figure, clock
from ivm.disks import HEADER
from ivm.hypervisor.storage import Storage
from ivm.image import _hash_data, as_qcow2, inspect
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


def cp_sparse(source: Path, dest: Path, synced: bool = False) -> float:
    """`cp --sparse=always`; with SYNCED, then `sync` of the copy (fsync: the data on disk, as the
    daemon's copy leaves it: libvirt's volume copy ends in fdatasync and fsync)."""
    argv = ["cp", "--sparse=always", str(source), str(dest)]
    with clock() as c:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode == 0 and synced:
            done = subprocess.run(["sync", str(dest)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"cp failed: {done.stderr.strip()}")
    dest.unlink()
    return c.seconds


def parts(lab: Lab, storage: Storage, source: Path) -> dict[str, float]:
    """ivm's import steps, called as `create` calls them (ivm/disks.py import_base), and the
    stream the import used before (and still uses for a remote daemon), on the same file."""
    with clock() as check:
        base = inspect(source)  # with the hash remembered: qemu-img info only
    fd = os.open(source, os.O_RDONLY)
    try:
        with clock() as hashing:
            _hash_data(fd)
    finally:
        os.close(fd)
    name = base_volume(base.hash)
    with tempfile.TemporaryDirectory(prefix="ivm-base-") as tmp:
        with clock() as convert:
            qcow2 = as_qcow2(base, Path(tmp))
        with clock() as clone:
            storage.import_file(name, qcow2, header=HEADER, mode="0644", disposable=True)
        lab.delete_volume(name)
        with clock() as stream:
            storage.import_file(name, qcow2, header=HEADER, mode="0644")
        lab.delete_volume(name)
    return {
        "check (qemu-img info; hash remembered)": check.seconds,
        "content hash, first sight of the file": hashing.seconds,
        "convert raw to qcow2 (qemu-img convert)": convert.seconds,
        "daemon copy + header upload (local path)": clone.seconds,
        "for comparison: sparse stream upload (remote path)": stream.seconds,
    }


@contextmanager
def _remote(lab: Lab) -> Iterator[tuple[str, Path] | str]:
    """A second daemon on its own socket (as the remote tests use), or why there is none."""
    try:
        with second_host() as host:
            pool_dir = host.pool_base / f"{lab.pool}-remote"
            try:
                yield host.uri, pool_dir
            finally:
                conn = libvirt.open(host.uri)
                try:
                    pool = conn.storagePoolLookupByName(lab.pool)
                    pool.refresh(0)
                    for vol in pool.listAllVolumes(0):
                        vol.delete(0)
                    pool.destroy()
                    pool.undefine()
                except libvirt.libvirtError:
                    pass
                finally:
                    conn.close()
                shutil.rmtree(pool_dir, ignore_errors=True)
    except SecondHostError as e:
        yield f"no second daemon: {e}"


def run(lab: Lab, runs: int) -> dict[str, Any]:
    source = sparse_image(lab.image("A"), lab.work / "big.raw")
    data_bytes = source.stat().st_blocks * 512
    cache = lab.work / "cache"
    first_s: list[float] = []
    known_s: list[float] = []
    cp_s: list[float] = []
    synced_s: list[float] = []
    part_s: dict[str, list[float]] = {}
    qcow2_bytes = 0
    names = [lab.name(f"i{r}") for r in range(runs)]
    lab.add_machines(names)
    storage = Storage(lab.conn, lab.pool, str(lab.pool_path))
    for name in names:
        for figures, forget in ((first_s, True), (known_s, False)):
            if forget:
                shutil.rmtree(cache, ignore_errors=True)  # the file was never seen
            before = set(lab.base_volumes())
            figures.append(lab.ivm("create", name, "--image", str(source))[1])
            new_bases = set(lab.base_volumes()) - before
            if len(new_bases) != 1:
                raise BenchError(f"ivm create imported {len(new_bases)} bases, expected one")
            qcow2_bytes = sum(lab.allocated(sorted(new_bases)).values())
            lab.remove_vms([name])
            lab.add_machines([name])
            for vol in new_bases:
                lab.delete_volume(vol)
        cp_s.append(cp_sparse(source, lab.pool_path / "cp-copy.raw"))
        synced_s.append(cp_sparse(source, lab.pool_path / "cp-copy.raw", synced=True))
        for step, seconds in parts(lab, storage, source).items():
            part_s.setdefault(step, []).append(seconds)
    lab.remove_vms(names)
    remote = remote_import(lab, source, runs)
    source.unlink()
    first, known, cp = Figure.of(first_s), Figure.of(known_s), Figure.of(cp_s)
    return {
        "image": {"apparent_bytes": SIZE, "data_bytes": data_bytes, "base_volume_bytes": qcow2_bytes},
        "ivm_create_first": first,
        "ivm_create": known,
        "cp_sparse": cp,
        "cp_sparse_synced": Figure.of(synced_s),
        "ratio_first": first.median / cp.median,
        "ratio": known.median / cp.median,
        "ratio_synced": known.median / Figure.of(synced_s).median,
        "parts": {k: Figure.of(v) for k, v in part_s.items()},
        "remote": remote,
    }


def remote_import(lab: Lab, source: Path, runs: int) -> dict[str, Any]:
    """`ivm --connect <second daemon> create` (a sparse stream) against cp into that daemon's pool
    folder, the hash remembered on both sides of the comparison."""
    with _remote(lab) as found:
        if isinstance(found, str):
            return {"skipped": found}
        uri, pool_dir = found
        env_pool = {"IVM_POOL_PATH": str(pool_dir)}
        name = lab.name("remote")
        lab.add_machines([name])
        ivm_s: list[float] = []
        cp_s: list[float] = []
        try:
            for _ in range(runs):
                ivm_s.append(
                    lab.ivm("--connect", uri, "create", name, "--image", str(source), env=env_pool)[1]
                )
                conn = libvirt.open(uri)
                try:
                    pool = conn.storagePoolLookupByName(lab.pool)
                    for vol in pool.listAllVolumes(0):
                        vol.delete(0)
                finally:
                    conn.close()
                cp_s.append(cp_sparse(source, pool_dir / "cp-copy.raw"))
        finally:
            lab.remove_vms([name])
            tag = hashlib.sha256(uri.encode()).hexdigest()[:12]  # ivm's lock files for that URI
            for folder in (Path("/run/lock/ivm"), Path("/run/ivm")):
                for lock in folder.glob(f"{tag}-*.lock"):
                    lock.unlink(missing_ok=True)
        ivm, cp = Figure.of(ivm_s), Figure.of(cp_s)
        return {"uri": uri, "ivm_create": ivm, "cp_sparse": cp, "ratio": ivm.median / cp.median}
