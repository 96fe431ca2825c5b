"""`ivm ssh-config`: Host blocks that OpenSSH itself parses, pinned keys, safe regeneration."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ivm.errors import ToolError
from ivm.ops import ssh_config as ssh_config_ops
from ivm.ops.ssh import HARDENING, Target
from tests.conftest import Project, RunCli, machine_entry

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIg1El8h+IR/7iF8FBigHB867NLB9MuiAxwmrBL1GJmQ root@web1"
WEB1 = Target("web1", "qemu:///system", "ivm-web1", "192.0.2.5", PUB)
WEB2 = Target("web2", "qemu:///system", "ivm-web2", "192.0.2.6", PUB)


def ssh_g(config: Path, host: str) -> dict[str, str]:
    """What OpenSSH makes of the file for `ssh HOST` (`ssh -G` parses and prints, connects nowhere)."""
    ssh = shutil.which("ssh")
    if ssh is None:
        pytest.skip("ssh is not installed")
    r = subprocess.run([ssh, "-G", "-F", str(config), host], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    return {k: v for k, _, v in (line.partition(" ") for line in r.stdout.splitlines())}


def test_ssh_parses_the_blocks_and_names_the_pinned_known_hosts(tmp_path: Path) -> None:
    out = tmp_path / "dir with space" / "ivm.conf"
    out.parent.mkdir()
    config, keys = ssh_config_ops.render([WEB1, WEB2], [], "admin", ssh_config_ops.known_hosts_for(out))
    ssh_config_ops.write_config(out, config, keys)
    seen = ssh_g(out, "web1")
    assert seen["hostname"] == "192.0.2.5" and seen["user"] == "admin"
    assert seen["userknownhostsfile"] == str(out) + ".known_hosts"
    assert seen["globalknownhostsfile"] == "/dev/null"
    assert seen["stricthostkeychecking"] == "true"
    assert seen["hostkeyalias"] == "ivm-web1"
    assert (
        seen["forwardagent"] == "no" and seen["forwardx11"] == "no" and seen["clearallforwardings"] == "yes"
    )
    assert seen["controlmaster"] == "false" and seen["checkhostip"] == "no"
    assert "proxycommand" not in seen and "proxyjump" not in seen
    assert ssh_g(out, "web2")["hostname"] == "192.0.2.6"
    assert ssh_g(out, "other")["hostname"] == "other"  # nothing leaks outside the Host blocks
    pinned = (out.parent / "ivm.conf.known_hosts").read_text().splitlines()
    assert pinned == [f"ivm-web1 {' '.join(PUB.split()[:2])}", f"ivm-web2 {' '.join(PUB.split()[:2])}"]


def test_every_hardening_option_of_ivm_ssh_is_in_each_block(tmp_path: Path) -> None:
    block = ssh_config_ops.host_block(WEB1, "admin", tmp_path / "k")
    for option in HARDENING:
        key, value = option.split("=", 1)
        assert f"    {key} {value}\n" in block


def test_included_from_a_user_config(tmp_path: Path) -> None:
    out = tmp_path / "ivm.conf"
    config, keys = ssh_config_ops.render([WEB1], [], "admin", ssh_config_ops.known_hosts_for(out))
    ssh_config_ops.write_config(out, config, keys)
    user = tmp_path / "config"
    user.write_text(f"Include {out}\n\nHost *\n    User someone\n")
    assert ssh_g(user, "web1")["user"] == "admin"


def test_regenerating_replaces_the_file_and_never_follows_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    out = tmp_path / "ivm.conf"
    out.symlink_to(victim)
    config, keys = ssh_config_ops.render([WEB1], [], "admin", ssh_config_ops.known_hosts_for(out))
    ssh_config_ops.write_config(out, config, keys)
    assert victim.read_text() == "keep\n" and not out.is_symlink()
    assert out.read_text().startswith("# Written by `ivm ssh-config`")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ivm.conf", "ivm.conf.known_hosts", "victim"]


def test_skipped_vms_are_comments(tmp_path: Path) -> None:
    config, _ = ssh_config_ops.render(
        [], [ssh_config_ops.Skipped("db1", "db1 is not running")], "a", tmp_path
    )
    assert "# db1: skipped: db1 is not running\n" in config and "Host" not in config


def test_cli_needs_names_or_all(run_cli: RunCli) -> None:
    assert run_cli("ssh-config").exit_code == 2
    assert run_cli("ssh-config", "web1", "--all").exit_code == 2
    r = run_cli("ssh-config", "-x")
    assert r.exit_code == 2


def test_cli_bad_name_is_refused(run_cli: RunCli) -> None:
    r = run_cli("ssh-config", "web1\nHost *")
    assert r.exit_code == 2 and r.stdout == ""


def test_cli_named_vm_not_running_is_one_line(run_cli: RunCli, project: Project) -> None:
    r = run_cli("ssh-config", "web1")
    assert r.exit_code in (1, 2) and r.stdout == "" and r.stderr.startswith("ivm: error: ")


def test_cli_all_skips_what_ssh_cannot_reach(run_cli: RunCli, project: Project) -> None:
    project.write_machines({"web1": machine_entry(), "db1": machine_entry(network={"type": "none"})})
    r = run_cli("ssh-config", "--all")
    assert r.exit_code == 0, r.output
    assert "# db1: skipped: no network" in r.stdout and "Host " not in r.stdout


def test_cli_writes_the_file_with_resolved_targets(
    run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake(_settings: object, name: str) -> Target:
        if name == "web2":
            raise ToolError("web2 is not running", "start it")
        return WEB1

    monkeypatch.setattr(ssh_config_ops, "resolve_target", fake)
    out = tmp_path / "ivm.conf"
    r = run_cli("ssh-config", "--all", "-o", str(out), "-l", "ops")
    assert r.exit_code == 0, r.output
    assert r.stdout == f"wrote 1 Host block(s) to {out}\n"
    assert "ivm: web2: skipped: web2 is not running" in r.stderr
    assert ssh_g(out, "web1")["user"] == "ops"
