"""ivm's pool on the real daemon: a directory named after IVM_POOL, a clash refused with nothing
half-made, and `ivm pool remove` once it is empty."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.integration.conftest import Fleet, Images, teardown_fleet, vm_name


def _ivm(fleet: Fleet, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        fleet.argv(*args), capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_pool_without_path_gets_its_own_directory_and_is_removed_when_empty(
    fleet: Fleet, images: Images
) -> None:
    env = fleet.env()
    del env["IVM_POOL_PATH"]
    own = Path("/var/lib/libvirt/images") / fleet.pool
    name = fleet.add(vm_name())
    try:
        r = _ivm(fleet, env, "create", name, "--image", str(images.a))
        assert r.returncode == 0, r.stderr
        assert (own / f"{name}-var.qcow2").is_file()

        r = _ivm(fleet, env, "pool", "remove")
        assert r.returncode == 1 and "still holds" in r.stderr and own.is_dir()

        assert _ivm(fleet, env, "destroy", name, "--delete-data").returncode == 0
        assert _ivm(fleet, env, "gc").returncode == 0
        r = _ivm(fleet, env, "pool", "remove")
        assert r.returncode == 0 and f"removed storage pool {fleet.pool}" in r.stdout, r.stderr
        assert not own.exists() and fleet.volumes() == []
        assert "nothing to do" in _ivm(fleet, env, "pool", "remove").stdout
    finally:
        teardown_fleet(fleet)
        if own.is_dir():
            for leftover in own.iterdir():
                leftover.unlink()
            own.rmdir()


def test_a_pool_on_another_pools_directory_is_refused_and_undone(fleet: Fleet, images: Images) -> None:
    name = fleet.add(vm_name())
    fleet.ivm("create", name, "--image", str(images.a))  # the fleet's pool now owns its directory
    env = fleet.env()
    other = f"{fleet.pool}-clash"
    env["IVM_POOL"] = other
    second = fleet.add(vm_name())
    r = _ivm(fleet, env, "create", second, "--image", str(images.a))
    lines = [line for line in r.stderr.splitlines() if line.startswith("ivm: error:")]
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "another pool already uses that directory" in lines[0] and "IVM_POOL_PATH" in lines[0]
    conn = fleet.conn()
    try:
        assert other not in conn.listStoragePools() + conn.listDefinedStoragePools()
    finally:
        conn.close()


def test_relative_pool_path_creates_nothing(fleet: Fleet, images: Images) -> None:
    env = fleet.env()
    env["IVM_POOL_PATH"] = "pool"
    name = fleet.add(vm_name())
    r = _ivm(fleet, env, "create", name, "--image", str(images.a))
    assert r.returncode == 2 and "not an absolute path" in r.stderr
    conn = fleet.conn()
    try:
        assert fleet.pool not in conn.listStoragePools() + conn.listDefinedStoragePools()
    finally:
        conn.close()
