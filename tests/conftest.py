"""Fixtures shared by every layer: a throwaway project (flake.nix + machines/) and a CLI runner."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ivm.cli import cli

# Tests marked host_changes (system users, device modes, the system daemon) run only where this is 1.
HOST_CHANGES_ENV = "IVM_TEST_HOST_CHANGES"


def host_changes_allowed() -> bool:
    return os.environ.get(HOST_CHANGES_ENV) == "1"


def require_host_changes(what: str) -> None:
    """Skip unless host changes are allowed; called by every fixture that changes the host, so a
    test that forgot its `host_changes` marker still changes nothing."""
    if not host_changes_allowed():
        pytest.skip(f"changes the host ({what}): set {HOST_CHANGES_ENV}=1 to run it (.ci/run does)")


@pytest.hookimpl(tryfirst=True)  # before any fixture of the test is set up
def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("host_changes")
    if marker is not None:
        require_host_changes(str(marker.kwargs.get("what", "see the test's docstring")))


@pytest.fixture(scope="session", autouse=True)
def private_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """ivm's image hash cache (and any other XDG cache) in a throwaway folder, for the tests and
    every ivm they run, so no test leaves a file in the user's home."""
    path = tmp_path_factory.mktemp("cache-home")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(path)
    try:
        yield path
    finally:
        if before is None:
            del os.environ["XDG_CACHE_HOME"]
        else:
            os.environ["XDG_CACHE_HOME"] = before


def machine_entry(**overrides: Any) -> dict[str, Any]:
    """One complete machines.json entry (docs/operations.md), with every field given."""
    entry: dict[str, Any] = {
        "system": "x86_64-linux",
        "vcpus": 2,
        "memory_mib": 2048,
        "var_size_gib": 20,
        "network": {"type": "network", "name": "default"},
        "mac": None,
        "libvirt_uri": None,
        "image_attr": "image-web1",
    }
    entry.update(overrides)
    return entry


@dataclass
class Project:
    root: Path
    machines_file: Path

    def write_machines(self, machines: dict[str, dict[str, Any]]) -> None:
        self.machines_file.write_text(json.dumps({"version": 1, "machines": machines}))

    def machine_dir(self, name: str) -> Path:
        return self.root / "machines" / name


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "project"
    (root / "machines").mkdir(parents=True)
    (root / "flake.nix").write_text("{ outputs = _: { }; }\n")
    p = Project(root, tmp_path / "machines.json")
    p.write_machines({"web1": machine_entry(), "web2": machine_entry(image_attr="image-web2")})
    return p


@pytest.fixture(scope="session")
def system_uri() -> Iterator[str]:
    """A real libvirt daemon at qemu:///system, started if none answers (as root). Under CI a
    daemon that cannot be had fails the run; elsewhere the tests that need it are skipped. Where
    host changes are allowed, /dev/kvm gets the mode udev would give it for the session."""
    from tests.lab.daemon import DaemonError, ensure_libvirt, kvm_for_qemu

    with kvm_for_qemu() if host_changes_allowed() else nullcontext():
        try:
            uri = ensure_libvirt()
        except DaemonError as e:
            if os.environ.get("CI"):
                pytest.fail(f"CI needs a libvirt daemon: {e}")
            pytest.skip(f"no libvirt daemon: {e}")
        yield uri


RunCli = Callable[..., Result]


@pytest.fixture(scope="session")
def test_driver() -> Iterator[Any]:
    """A connection to libvirt's test driver, held open: its state lives as long as one is open."""
    import libvirt

    conn = libvirt.open("test:///default")
    yield conn
    conn.close()


@pytest.fixture
def run_cli(project: Project, monkeypatch: pytest.MonkeyPatch, test_driver: Any) -> RunCli:
    """Invoke `ivm` in-process against the project, on libvirt's test driver unless told otherwise."""
    for var in ("LIBVIRT_URI", "IVM_POOL", "IVM_POOL_PATH", "OVMF_CODE", "OVMF_VARS", "IVM_VIRT_TYPE"):
        monkeypatch.delenv(var, raising=False)

    def invoke(*args: str, uri: str = "test:///default", input: str | None = None) -> Result:
        base = ["--machines", str(project.machines_file), "--root", str(project.root)]
        if uri:
            base += ["--connect", uri]
        return CliRunner().invoke(cli, [*base, *args], input=input, catch_exceptions=True)

    return invoke


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regenerate-golden",
        action="store_true",
        help="rewrite tests/unit/golden/*.xml from the current code instead of comparing",
    )
