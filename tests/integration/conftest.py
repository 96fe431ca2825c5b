"""Integration fixtures: a real libvirt daemon, stand-in guest images, and a throwaway fleet
(its own pool in a scratch directory, its own project folder) driven through the real `ivm` CLI."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import pytest

from ivm.image import content_hash
from ivm.volumes import base_volume
from tests.conftest import machine_entry
from tests.lab.console import ConsoleCapture
from tests.lab.daemon import remove_domain_logs
from tests.lab.pool import scratch_pool_dir
from tests.lab.report import Report
from tests.lab.runtime_files import remove_runtime_files
from tests.lab.standin.image import build_standin_image

BOOT_TIMEOUT = 180.0  # a TCG boot takes ~10 s; leave room for a loaded CI machine


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path) and not item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.integration)


@dataclass(frozen=True)
class Images:
    a: Path  # stand-in guest printing marker A
    b: Path  # the same guest printing marker B: an "upgraded" base


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory, system_uri: str) -> Images:
    d = tmp_path_factory.mktemp("standin")
    return Images(build_standin_image(d / "a.raw", "A"), build_standin_image(d / "b.raw", "B"))


@dataclass
class Fleet:
    """A project folder with machines.json and an `ivm` pool of its own on a real daemon."""

    uri: str
    root: Path
    machines_file: Path
    pool: str
    pool_path: Path
    names: list[str] = field(default_factory=list)
    images: set[Path] = field(default_factory=set)  # every --image given: their bases' locks go too

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IVM_", "OVMF_"))}
        env.update(IVM_POOL=self.pool, IVM_POOL_PATH=str(self.pool_path), LIBVIRT_URI=self.uri)
        return env

    def add(self, name: str, **overrides: Any) -> str:
        """Add a machine (no NIC by default: the stand-in needs none)."""
        self.names.append(name)
        doc = json.loads(self.machines_file.read_text())
        doc["machines"][name] = machine_entry(
            **{
                "memory_mib": 256,
                "vcpus": 1,
                "var_size_gib": 1,
                "network": {"type": "none"},
                "image_attr": f"image-{name}",
                **overrides,
            }
        )
        self.machines_file.write_text(json.dumps(doc))
        return name

    def argv(self, *args: str) -> list[str]:
        """The real CLI as a user runs it, on this fleet's machines and project."""
        self.images.update(Path(v) for k, v in itertools.pairwise(args) if k == "--image")
        return [
            sys.executable,
            "-m",
            "ivm",
            "--machines",
            str(self.machines_file),
            "--root",
            str(self.root),
            *args,
        ]

    def ivm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run the real CLI in a subprocess, as a user would."""
        r = subprocess.run(
            self.argv(*args), capture_output=True, text=True, env=self.env(), timeout=timeout, check=False
        )
        if check and r.returncode != 0:
            pytest.fail(f"ivm {' '.join(args)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
        return r

    def conn(self) -> Any:
        return libvirt.open(self.uri)

    def volumes(self) -> list[str]:
        conn = self.conn()
        try:
            pool = conn.storagePoolLookupByName(self.pool)
            pool.refresh(0)
            return sorted(pool.listVolumes())
        except libvirt.libvirtError:
            return []
        finally:
            conn.close()

    def volume_path(self, name: str) -> Path:
        return self.pool_path / name

    def boot(self, name: str, timeout: float = BOOT_TIMEOUT) -> Report:
        """`ivm start NAME`, read the stand-in's console report, wait until it powers off."""
        self.ivm("start", name)
        with ConsoleCapture(self.uri, name) as console:
            report = console.wait_done(timeout)
        self.wait_shut_off(name)
        return report

    def wait_shut_off(self, name: str, timeout: float = 30) -> None:
        conn = self.conn()
        try:
            dom = conn.lookupByName(name)
            deadline = time.monotonic() + timeout
            while dom.isActive():
                if time.monotonic() > deadline:
                    pytest.fail(f"{name} did not power off within {timeout} s")
                time.sleep(0.1)
        finally:
            conn.close()


def teardown_fleet(fleet: Fleet) -> None:
    """Remove the fleet's domains (with their UEFI variables and QEMU logs), volumes and pool, then
    the lock files and pinned host keys ivm kept for them in its runtime directory."""
    volumes = fleet.volumes()
    try:
        _remove_domains_and_pool(fleet)
    finally:
        locks = [*fleet.names, f"_pool-{fleet.pool}", *(f"_{v}" for v in volumes)]
        locks += [f"_{base_volume(content_hash(i))}" for i in fleet.images if i.is_file()]
        remove_runtime_files(_fleet_uris(fleet), locks)
        remove_domain_logs(fleet.uri, fleet.names)


def _fleet_uris(fleet: Fleet) -> set[str]:
    """The fleet's URI and those its machines name; a test may have left machines.json broken."""
    try:
        doc = json.loads(fleet.machines_file.read_text())
        named = {m.get("libvirt_uri") for m in doc["machines"].values()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        named = set()
    return {fleet.uri, *(u for u in named if isinstance(u, str) and u)}


def _remove_domains_and_pool(fleet: Fleet) -> None:
    conn = fleet.conn()
    try:
        for name in fleet.names:
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError:
                continue
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(
                libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            )
        try:
            pool = conn.storagePoolLookupByName(fleet.pool)
        except libvirt.libvirtError:
            return
        if pool.isActive():
            pool.refresh(0)
            for vol in pool.listAllVolumes():
                vol.delete(0)
            pool.destroy()
        pool.undefine()
    finally:
        conn.close()


@pytest.fixture
def fleet(system_uri: str, tmp_path: Path) -> Iterator[Fleet]:
    root = tmp_path / "project"
    (root / "machines").mkdir(parents=True)
    (root / "flake.nix").write_text("{ outputs = _: { }; }\n")
    machines = tmp_path / "machines.json"
    machines.write_text(json.dumps({"version": 1, "machines": {}}))
    with scratch_pool_dir() as pool_dir:
        f = Fleet(system_uri, root, machines, f"ivm-test-{secrets.token_hex(4)}", pool_dir / "pool")
        try:
            yield f
        finally:
            teardown_fleet(f)


def vm_name(prefix: str = "it") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"
