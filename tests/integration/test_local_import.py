"""A base imported into a pool on this machine's own daemon is copied by the daemon from a
transient pool over ivm's temporary folder: holes stay holes, the content is exact, the header
still comes last, and no transient pool is left behind."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import libvirt

from ivm.hypervisor.storage import SOURCE_POOL_PREFIX, Storage, shares_files
from tests.integration.conftest import Fleet

MIB = 1024**2


def sparse_file(path: Path) -> Path:
    """64 MiB apparent, 2 MiB of data: a fake header, then one extent in the middle."""
    with path.open("wb") as f:
        f.write(b"QFI\xfb" + os.urandom(4092))
        f.seek(32 * MIB)
        f.write(os.urandom(2 * MIB))
        f.truncate(64 * MIB)
    return path


def transient_import_pools(conn: object) -> list[str]:
    pools = conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_TRANSIENT)  # type: ignore[attr-defined]
    return [p.name() for p in pools if p.name().startswith(f"{SOURCE_POOL_PREFIX}{os.getpid()}-")]


def test_local_copy_keeps_holes_and_content(fleet: Fleet, tmp_path: Path) -> None:
    assert shares_files(fleet.uri), "this test is about the daemon on this machine's own socket"
    source = sparse_file(tmp_path / "base.qcow2")
    expected = source.read_bytes()
    conn = libvirt.open(fleet.uri)
    try:
        storage = Storage(conn, fleet.pool, str(fleet.pool_path))
        storage.import_file("local-copy.qcow2", source, header=4096, mode="0644", disposable=True)
        assert source.read_bytes() == expected  # the header zeroed for the copy is put back
        copied = fleet.pool_path / "local-copy.qcow2"
        assert copied.read_bytes() == expected
        assert copied.stat().st_blocks * 512 < 8 * MIB  # 2 MiB of data, not 64
        assert transient_import_pools(conn) == []
    finally:
        Storage(conn, fleet.pool, str(fleet.pool_path)).delete("local-copy.qcow2")
        conn.close()


def test_remote_uris_get_a_stream() -> None:
    assert shares_files("qemu:///system") and shares_files("qemu:///session")
    for uri in (
        "qemu+ssh://host/system",
        "qemu+unix:///system?socket=/x",
        "test:///default",
        "qemu://h/system",
    ):
        assert not shares_files(uri), uri


def test_a_killed_runs_transient_pool_is_removed(fleet: Fleet, tmp_path: Path) -> None:
    """A pool named for a process that is gone (killed while the daemon copied) goes at the next
    import; one of a live process stays."""
    from ivm.hypervisor.storage import _remove_stale_source_pools

    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    conn = libvirt.open(fleet.uri)
    made = []
    try:
        for pid in (dead, os.getpid()):
            folder = tmp_path / str(pid)  # two pools may not share a folder
            folder.mkdir()
            name = f"{SOURCE_POOL_PREFIX}{pid}-test"
            xml = f"<pool type='dir'><name>{name}</name><target><path>{folder}</path></target></pool>"
            made.append(conn.storagePoolCreateXML(xml, 0))
        _remove_stale_source_pools(conn)
        left = {p.name() for p in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_TRANSIENT)}
        assert f"{SOURCE_POOL_PREFIX}{dead}-test" not in left
        assert f"{SOURCE_POOL_PREFIX}{os.getpid()}-test" in left
    finally:
        for pool in made:
            with contextlib.suppress(libvirt.libvirtError):
                pool.destroy()
        conn.close()
