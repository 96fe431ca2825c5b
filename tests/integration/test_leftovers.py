"""Tests leave nothing behind on the host: a fleet's teardown also removes what ivm keeps in its
runtime directory (/run/ivm as root) for the fleet's VMs, pool and bases, and the QEMU logs the
system daemon keeps for its domains; only those."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from ivm.image import content_hash
from ivm.runtime_dir import file_name
from ivm.volumes import base_volume
from tests.integration.conftest import Fleet, Images, teardown_fleet, vm_name
from tests.lab.daemon import QEMU_LOG_DIR
from tests.lab.runtime_files import remove_runtime_files, runtime_files


def test_a_fleets_teardown_leaves_no_lock_file_and_no_qemu_log(fleet: Fleet, images: Images) -> None:
    name = fleet.add(vm_name("lo"))
    fleet.ivm("create", name, "--image", str(images.a))
    fleet.ivm("define", name)
    fleet.boot(name)
    logs = [QEMU_LOG_DIR / f"{name}.log"] if os.geteuid() == 0 else []
    assert all(log.is_file() for log in logs)  # the daemon keeps it after the domain is gone
    ours = [name, f"_pool-{fleet.pool}", f"_{base_volume(content_hash(images.a))}"]
    # ivm keeps its lock files after the run: without the teardown's removal they would stay
    assert {p.name for p in runtime_files([fleet.uri], ours)} == {
        file_name(fleet.uri, n, ".lock") for n in ours
    }
    teardown_fleet(fleet)
    assert runtime_files([fleet.uri], ours) == []
    assert not any(log.exists() for log in logs)


def test_a_held_lock_is_left_to_its_holder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ivm.runtime_dir.RUN_ROOT", tmp_path / "run")
    monkeypatch.setattr("ivm.runtime_dir.TMP_ROOT", tmp_path / "tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    uri = "qemu:///system"
    directory = (tmp_path / "run" if os.geteuid() == 0 else tmp_path / "xdg") / "ivm"
    directory.mkdir(parents=True, mode=0o700)
    held, free = directory / file_name(uri, "held", ".lock"), directory / file_name(uri, "free", ".lock")
    held.touch()
    free.touch()
    fd = os.open(held, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert remove_runtime_files([uri], ["held", "free"]) == [held]
        assert held.exists() and not free.exists()
    finally:
        os.close(fd)
