"""A machine folder copied from another: shared machine-id, a hostname naming another machine and
the repository's example keys are refused before anything is created; stray files are warned of."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ivm.identity.clashes import EXAMPLE_KEY_BLOBS, warn_unknown_files
from ivm.identity.source import generate_missing
from ivm.identity.sshkey import split_authorized_key
from tests.conftest import Project, RunCli
from tests.unit.test_cli import one_error_line

# Debian keeps sfdisk in /usr/sbin, off a user's PATH; the Nix build has it on PATH only.
SFDISK_ENV = {"PATH": os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])}
REPO_MACHINES = Path(__file__).resolve().parents[2] / "machines"


@pytest.fixture
def web1_made(run_cli: RunCli, project: Project, tmp_path: Path) -> Path:
    """web1 with a generated identity; returns a raw disk image (GPT) to create with."""
    image = tmp_path / "disk.raw"
    with image.open("wb") as f:
        f.truncate(8 * 1024 * 1024)
    subprocess.run(["sfdisk", "-q", str(image)], input=b"label: gpt\n,,U\n", check=True, env=SFDISK_ENV)
    generate_missing(project.machine_dir("web1"), "web1")  # as `create` does first
    r = run_cli("xml", "web1", "--image", str(image))
    assert r.exit_code == 0, r.output
    return image


def _copy_web1_to_web2(project: Project) -> Path:
    web2 = project.machine_dir("web2")
    shutil.copytree(project.machine_dir("web1"), web2)
    return web2


def _pool_untouched(test_driver: Any) -> list[str]:
    return sorted(test_driver.listStoragePools() + test_driver.listDefinedStoragePools())


def test_copied_machine_id_is_refused_before_anything(
    run_cli: RunCli, project: Project, web1_made: Path, test_driver: Any
) -> None:
    web2 = _copy_web1_to_web2(project)
    (web2 / "hostname").write_text("web2\n")
    pools = _pool_untouched(test_driver)
    r = run_cli("create", "web2", "--image", str(web1_made))
    line = one_error_line(r.stderr)
    assert r.exit_code == 2 and "machine-id of web1 too" in line and "delete" in line
    assert _pool_untouched(test_driver) == pools


def test_hostname_naming_another_machine_is_refused(
    run_cli: RunCli, project: Project, web1_made: Path
) -> None:
    web2 = _copy_web1_to_web2(project)
    (web2 / "machine-id").unlink()  # a new one is generated; the hostname still says web1
    r = run_cli("create", "web2", "--image", str(web1_made))
    line = one_error_line(r.stderr)
    assert r.exit_code == 2 and "names another machine (web1)" in line and "write web2" in line


@pytest.mark.parametrize("keys", ["admin_authorized_keys", "user_authorized_keys"])
def test_example_keys_are_refused(run_cli: RunCli, project: Project, web1_made: Path, keys: str) -> None:
    # Any one of the shipped example keys, as a user who copied an example folder would have it.
    blob = sorted(EXAMPLE_KEY_BLOBS)[0]
    (project.machine_dir("web1") / keys).write_text(f"ssh-ed25519 {blob} example\n")
    r = run_cli("create", "web1", "--image", str(web1_made))
    line = one_error_line(r.stderr)
    assert r.exit_code == 2 and "example key" in line and "your own public key" in line


def test_every_key_shipped_in_machines_is_known_as_an_example() -> None:
    if not REPO_MACHINES.is_dir():
        pytest.skip("machines/ is not part of the package's source (the Nix check phase)")
    shipped = {
        split_authorized_key(line).split()[1]
        for f in REPO_MACHINES.glob("*/*_authorized_keys")
        for line in f.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert shipped and shipped <= EXAMPLE_KEY_BLOBS


def test_machine_id_of_a_domain_on_the_hypervisor_is_refused(
    run_cli: RunCli, project: Project, web1_made: Path, test_driver: Any
) -> None:
    from ivm.domain_xml import domain_uuid

    mid = (project.machine_dir("web1") / "machine-id").read_text().strip()
    other = f"clash-{mid[:6]}"
    test_driver.defineXML(
        f"<domain type='test'><name>{other}</name><uuid>{domain_uuid(mid)}</uuid>"
        "<memory>1024</memory><os><type>hvm</type></os></domain>"
    )
    try:
        r = run_cli("create", "web1", "--image", str(web1_made))
        line = one_error_line(r.stderr)
        assert r.exit_code == 2 and f"machine-id of domain {other} on the hypervisor" in line
    finally:
        test_driver.lookupByName(other).undefine()


def test_unknown_files_are_warned_of(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "authorized_keys").write_text("ssh-ed25519 AAAA me\n")
    (tmp_path / "hostname").write_text("web1\n")
    (tmp_path / "default.nix").write_text("{ }\n")
    (tmp_path / ".keygen-x").mkdir()
    with caplog.at_level(logging.WARNING, logger="ivm.identity"):
        assert warn_unknown_files(tmp_path) == ["authorized_keys"]
    assert "did you mean" in caplog.text and "admin_authorized_keys" in caplog.text
