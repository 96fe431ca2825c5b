"""Files ivm writes for an identity: modes that do not depend on the umask, an `identity-disk OUTPUT`
that never writes through a symlink, and no machine-id committed in the repository."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ivm.identity import disk
from ivm.identity.source import generate_missing
from ivm.run import run
from tests.conftest import Project, RunCli

REPO = Path(__file__).resolve().parents[2]
EXT4_MAGIC = b"\x53\xef"


@pytest.fixture(params=[0o000, 0o077], ids=["umask-000", "umask-077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_new_machine_folder_and_its_files_have_fixed_modes(tmp_path: Path, umask: int) -> None:
    directory = tmp_path / "project" / "machines" / "new-vm"
    generate_missing(directory, "new-vm")
    assert mode(tmp_path / "project" / "machines") == 0o755
    assert mode(directory) == 0o755
    assert {p.name: mode(p) for p in directory.iterdir()} == {
        "machine-id": 0o644,
        "hostname": 0o644,
        "ssh_host_ed25519_key": 0o600,
        "ssh_host_ed25519_key.pub": 0o644,
    }


def test_an_existing_folder_keeps_its_mode(tmp_path: Path, umask: int) -> None:
    directory = tmp_path / "web1"
    directory.mkdir()
    directory.chmod(0o700)
    generate_missing(directory, "web1")
    assert mode(directory) == 0o700


@pytest.fixture
def identity_dir(project: Project) -> Path:
    directory = project.machine_dir("web1")
    generate_missing(directory, "web1")
    return directory


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_text("precious\n")
    return path


def assert_written(output: Path, victim: Path) -> None:
    assert victim.read_text() == "precious\n"
    assert not output.is_symlink() and stat.S_ISREG(output.lstat().st_mode)
    assert mode(output) == 0o600
    assert output.read_bytes()[0x438:0x43A] == EXT4_MAGIC
    assert [p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.")] == []


def test_identity_disk_replaces_a_symlink_planted_at_output(
    run_cli: RunCli, identity_dir: Path, tmp_path: Path, victim: Path
) -> None:
    output = tmp_path / "out" / "identity.img"
    output.parent.mkdir()
    output.symlink_to(victim)
    r = run_cli("identity-disk", str(identity_dir), str(output), uri="")
    assert r.exit_code == 0, r.output
    assert_written(output, victim)


def test_identity_disk_never_reopens_output_by_name(
    run_cli: RunCli, identity_dir: Path, tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another user who can write in OUTPUT's folder swaps OUTPUT for a symlink while mkfs runs.
    output = tmp_path / "out" / "identity.img"
    output.parent.mkdir()
    real_run = run  # the function disk calls, before the patch below

    def racing_run(argv: list[str], **kwargs: Any) -> str:
        output.unlink(missing_ok=True)
        output.symlink_to(victim)
        return real_run(argv, **kwargs)

    monkeypatch.setattr(disk, "run", racing_run)
    r = run_cli("identity-disk", str(identity_dir), str(output), uri="")
    assert r.exit_code == 0, r.output
    assert_written(output, victim)


def test_identity_disk_into_a_folder_it_cannot_write_is_one_line(
    run_cli: RunCli, identity_dir: Path, tmp_path: Path
) -> None:
    r = run_cli("identity-disk", str(identity_dir), str(tmp_path / "missing" / "identity.img"), uri="")
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith(f"ivm: error: cannot write into {tmp_path / 'missing'}: ")
    assert len(r.stderr.splitlines()) == 1


def git(*args: str) -> subprocess.CompletedProcess[str]:
    # The Nix build's source is no checkout and has no git.
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)


def test_the_example_machines_commit_no_machine_id() -> None:
    listed = git("ls-files", "machines")
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    assert [f for f in listed.stdout.splitlines() if f.endswith("/machine-id")] == []
    assert git("check-ignore", "-q", "--no-index", "machines/web1/machine-id").returncode == 0
    assert git("check-ignore", "-q", "--no-index", "machines/web1/hostname").returncode == 1
