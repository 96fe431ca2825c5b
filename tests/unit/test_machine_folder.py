"""A machine folder that is a symlink (a committed `machines/web1 -> web2`) would give web1 web2's
host key and machine-id: every command that reads a machine folder refuses it, before any change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ivm.identity.source import generate_missing
from ivm.image import BaseImage
from tests.conftest import Project, RunCli

REFUSED = "machines/web1 is not a directory but a symbolic link"


@pytest.fixture
def linked(project: Project, test_driver: Any) -> Project:
    """machines/web2 is a real machine; machines/web1 is a symlink to it."""
    generate_missing(project.machine_dir("web2"), "web2")
    project.machine_dir("web1").symlink_to("web2")
    return project


def assert_refused(r: Any, linked: Project, test_driver: Any, code: int = 2) -> None:
    assert r.exit_code == code, r.output
    assert REFUSED in r.output, r.output
    assert "web1" not in [d.name() for d in test_driver.listAllDomains(0)]
    assert sorted(p.name for p in linked.machine_dir("web2").iterdir()) == [
        "hostname",
        "machine-id",
        "ssh_host_ed25519_key",
        "ssh_host_ed25519_key.pub",
    ]


@pytest.mark.parametrize("command", ["create", "up", "xml"])
def test_create_up_and_xml_refuse_a_symlinked_machine_folder(
    run_cli: RunCli, linked: Project, test_driver: Any, raw_image: Path, command: str
) -> None:
    assert_refused(run_cli(command, "web1", "--image", str(raw_image)), linked, test_driver)


def test_define_refuses_a_symlinked_machine_folder(
    run_cli: RunCli, linked: Project, test_driver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ivm.ops.define.created_base", lambda s: "a" * 32)  # as if web1 were created
    assert_refused(run_cli("define", "web1"), linked, test_driver)


def test_upgrade_refuses_a_symlinked_machine_folder(
    run_cli: RunCli, linked: Project, test_driver: Any, monkeypatch: pytest.MonkeyPatch, raw_image: Path
) -> None:
    # The test driver cannot upload a base: the build and import are taken as done.
    monkeypatch.setattr(
        "ivm.ops.upgrade.resolve_image",
        lambda settings, machine, image: BaseImage(raw_image, "raw", "b" * 32),
    )
    monkeypatch.setattr("ivm.ops.upgrade.import_base", lambda hv, base, progress: None)
    r = run_cli("upgrade", "web1", "--image", str(raw_image))
    assert "web1: failed: " in r.output
    assert_refused(r, linked, test_driver, code=1)


def test_rollback_refuses_a_symlinked_machine_folder(
    run_cli: RunCli, linked: Project, test_driver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ivm.ops.upgrade.previous_base", lambda s: "c" * 32)  # as if web1 had one
    assert_refused(run_cli("rollback", "web1"), linked, test_driver)


def test_ssh_refuses_a_symlinked_machine_folder(run_cli: RunCli, linked: Project, test_driver: Any) -> None:
    assert_refused(run_cli("ssh", "web1"), linked, test_driver)


def test_a_plain_folder_is_accepted(run_cli: RunCli, project: Project, raw_image: Path) -> None:
    r = run_cli("xml", "web1", "--image", str(raw_image))
    assert r.exit_code == 0, r.output
    assert not project.machine_dir("web1").is_symlink()
