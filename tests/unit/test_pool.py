"""ivm's storage pool: where it goes, what is refused, nothing half-made, removal when empty."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import libvirt
import pytest

from ivm.config import Settings
from ivm.errors import ToolError, UsageError
from ivm.hypervisor.handles import Connection
from ivm.hypervisor.storage import Storage
from tests.conftest import RunCli
from tests.unit.test_cli import one_error_line


def test_pool_name_names_its_directory() -> None:
    s = Settings.from_env({"IVM_POOL": "scratch"})
    assert s.pool_path_for("qemu:///system") == "/var/lib/libvirt/images/scratch"
    assert Settings.from_env({}).pool_path_for("qemu:///system") == "/var/lib/libvirt/images/ivm"
    session = Settings.from_env({"IVM_POOL": "mine"}).pool_path_for("qemu:///session")
    assert session.endswith("/libvirt/images/mine")
    given = Settings.from_env({"IVM_POOL": "x", "IVM_POOL_PATH": "/srv/vms"})
    assert given.pool_path_for("qemu:///system") == "/srv/vms"


@pytest.mark.parametrize("path", ["pool", "./pool", "~/pool"])
def test_relative_pool_path_is_refused(path: str) -> None:
    with pytest.raises(UsageError, match="not an absolute path"):
        Settings.from_env({"IVM_POOL_PATH": path})


@pytest.mark.parametrize("name", ["../etc", "a/b", "", "-x", "a b"])
def test_pool_names_that_cannot_be_a_folder_are_refused(name: str) -> None:
    if name == "":
        assert Settings.from_env({"IVM_POOL": name}).pool == "ivm"  # empty means unset
        return
    with pytest.raises(UsageError, match="not a usable pool name"):
        Settings.from_env({"IVM_POOL": name})


def test_relative_pool_path_is_one_line_exit_2(run_cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IVM_POOL_PATH", "pool")
    r = run_cli("create", "web1")
    assert r.exit_code == 2 and "IVM_POOL_PATH 'pool' is not an absolute path" in one_error_line(r.stderr)


class _FailingPool:
    """A just-defined pool whose start fails, recording what ivm does to undo it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def build(self, _flags: int) -> None:
        self.calls.append("build")

    def create(self, _flags: int) -> None:
        raise libvirt.libvirtError("cannot start: no such directory")

    def isActive(self) -> bool:  # noqa: N802 -- libvirt's name
        return False

    def delete(self, _flags: int) -> None:
        self.calls.append("delete")

    def undefine(self) -> None:
        self.calls.append("undefine")


class _Conn:
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def getURI(self) -> str:  # noqa: N802
        return "test:///pool-undo"

    def storagePoolLookupByName(self, name: str) -> Any:  # noqa: N802
        e = libvirt.libvirtError("no pool")
        e.err = (libvirt.VIR_ERR_NO_STORAGE_POOL, 0, "no pool", 0, "", "", "", 0, 0)
        raise e

    def storagePoolDefineXML(self, _xml: str, _flags: int) -> Any:  # noqa: N802
        return self.pool


def test_a_pool_that_fails_to_start_is_undone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    pool = _FailingPool()
    with pytest.raises(ToolError, match="creating storage pool p"):
        Storage(cast(Connection, _Conn(pool)), "p", str(tmp_path / "p")).ensure()
    assert pool.calls == ["build", "delete", "undefine"]


def test_pool_remove_on_test_driver(
    run_cli: RunCli, test_driver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IVM_POOL", "ivm-remove-test")
    monkeypatch.setenv("IVM_POOL_PATH", "/ivm-remove-test")
    assert "nothing to do" in run_cli("pool", "remove").stdout
    storage = Storage(test_driver, "ivm-remove-test", "/ivm-remove-test")
    storage.create("<volume><name>v.img</name><capacity>1024</capacity></volume>", "v.img")
    r = run_cli("pool", "remove")
    assert r.exit_code == 1 and "still holds 1 volume(s): v.img" in one_error_line(r.stderr)
    storage.delete("v.img")
    r = run_cli("pool", "remove")
    assert r.exit_code == 0 and "removed storage pool ivm-remove-test" in r.stdout, r.output
    assert "ivm-remove-test" not in test_driver.listStoragePools()
    assert "ivm-remove-test" not in test_driver.listDefinedStoragePools()


def test_pool_remove_refuses_a_pool_elsewhere(
    run_cli: RunCli, test_driver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IVM_POOL", "default-pool")  # the test driver's own pool, at /default-pool
    monkeypatch.setenv("IVM_POOL_PATH", "/somewhere-else")
    r = run_cli("pool", "remove")
    assert r.exit_code == 1 and "ivm removes only a pool of its own" in one_error_line(r.stderr)
    assert "default-pool" in test_driver.listStoragePools()
