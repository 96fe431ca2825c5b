"""`sudo ivm create` on the real daemon, in a project an unprivileged user owns: the image is built
by a fake nix that fails, as Nix does, when root works on another user's repository; the VM is made
and defined, and every file ivm generated in the project belongs to that user."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Fleet, teardown_fleet
from tests.lab.pool import scratch_pool_dir
from tests.unit.test_privilege import FAKE_NIX, MAKES_A_USER, throwaway_user

pytestmark = [pytest.mark.integration, MAKES_A_USER]


@pytest.fixture
def owner() -> Iterator[pwd.struct_passwd]:
    with throwaway_user() as user:
        yield user


@pytest.fixture
def owned_fleet(system_uri: str, owner: pwd.struct_passwd) -> Iterator[tuple[Fleet, Path]]:
    # Outside pytest's root-only tmp_path, so the owner (and the fake nix running as it) can reach it.
    top = Path(tempfile.mkdtemp(prefix="ivm-privilege-", dir="/tmp"))
    try:
        top.chmod(0o755)
        root = top / "project"
        (root / "machines").mkdir(parents=True)
        (root / "flake.nix").write_text("{ outputs = _: { }; }\n")
        for p in (root, *root.rglob("*")):
            os.chown(p, owner.pw_uid, owner.pw_gid)
        image = top / "image"
        image.mkdir()
        raw = image / "ivm.raw"
        with raw.open("wb") as f:
            f.truncate(8 * 1024 * 1024)
        subprocess.run(["/usr/sbin/sfdisk", "-q", str(raw)], input=b"label: gpt\n,,U\n", check=True)
        log = top / "nix.log"
        log.touch()
        log.chmod(0o666)
        (top / "bin").mkdir()
        fake = top / "bin" / "nix"
        fake.write_text(FAKE_NIX.format(log=log, tool="/nonexistent", machines="/nonexistent", image=image))
        fake.chmod(0o755)
        machines = top / "machines.json"
        machines.write_text(json.dumps({"version": 1, "machines": {}}))
        with scratch_pool_dir() as pool_dir:
            fleet = Fleet(system_uri, root, machines, f"ivm-test-{secrets.token_hex(4)}", pool_dir / "pool")
            try:
                yield fleet, top
            finally:
                teardown_fleet(fleet)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_create_as_root_in_a_users_project(owned_fleet: tuple[Fleet, Path], owner: pwd.struct_passwd) -> None:
    fleet, top = owned_fleet
    name = fleet.add(f"priv-{secrets.token_hex(3)}")
    env = {**fleet.env(), "PATH": f"{top / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for command in ("create", "define"):
        r = subprocess.run(
            fleet.argv(command, name), capture_output=True, text=True, env=env, timeout=300, check=False
        )
        assert r.returncode == 0, r.stderr
        assert "not owned by current user" not in r.stderr
    nix_users = {int(line.split()[0]) for line in (top / "nix.log").read_text().splitlines()}
    assert nix_users == {owner.pw_uid}
    files = list(fleet.root.rglob("*"))
    assert files and all(p.lstat().st_uid == owner.pw_uid for p in files), files
    key = fleet.root / "machines" / name / "ssh_host_ed25519_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert sorted(v for v in fleet.volumes() if v.startswith(name)) == [
        f"{name}-boot.qcow2",
        f"{name}-identity.img",
        f"{name}-var.qcow2",
    ]
