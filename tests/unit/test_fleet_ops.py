"""Pure parts of the fleet commands: ssh arguments and known_hosts, upgrade lines, gc targets."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any, cast

import pytest

from ivm.config import Settings
from ivm.errors import UsageError
from ivm.ops.gc import hypervisor_uris
from ivm.ops.ssh import known_hosts_line, ssh_argv
from ivm.ops.upgrade import FleetResult, UpgradeResult
from ivm.storage_xml import volume_xml
from tests.conftest import Project, RunCli, machine_entry

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIg1El8h+IR/7iF8FBigHB867NLB9MuiAxwmrBL1GJmQ root@web1"


def test_known_hosts_pins_the_identity_key_to_an_alias() -> None:
    assert known_hosts_line("ivm-web1", PUB) == f"ivm-web1 {' '.join(PUB.split()[:2])}\n"


def test_ssh_is_strict_and_never_asks() -> None:
    argv = ssh_argv("ivm-web1", "192.0.2.5", "admin", Path("/k"), ["uptime"])
    joined = " ".join(argv)
    for option in (
        "StrictHostKeyChecking=yes",
        'UserKnownHostsFile="/k"',
        "GlobalKnownHostsFile=/dev/null",
        "HostKeyAlias=ivm-web1",
    ):
        assert option in joined
    assert argv[-3:] == ["--", "192.0.2.5", "uptime"]
    assert ssh_argv("a", "h", "u", Path("/k"), [])[-1] == "h"


def test_upgrade_lines_and_summary() -> None:
    moved = UpgradeResult("web1", "a" * 32, "b" * 32, True, False, True, 0.5)
    same = UpgradeResult("web2", "b" * 32, "b" * 32, False, False, False, None)
    ident = UpgradeResult("web3", "b" * 32, "b" * 32, True, True, False, None)
    assert moved.line() == f"web1: base {'a' * 12} -> {'b' * 12}, restarted after 0.50 s down"
    assert same.line() == f"web2: up to date on base {'b' * 12}"
    assert ident.line() == f"web3: identity rebuilt on base {'b' * 12}"
    summary = FleetResult((moved, same), (("web4", "boom"),), ("web5",)).summary()
    assert summary == "1 upgraded, 1 up to date, 1 failed, 1 not created"


def test_gc_visits_every_uri_the_machines_use(project: Project) -> None:
    project.write_machines(
        {
            "a": machine_entry(),
            "b": machine_entry(libvirt_uri="qemu+ssh://hv2/system"),
        }
    )
    s = Settings.from_env({}, machines_file=project.machines_file)
    assert hypervisor_uris(s) == ["qemu+ssh://hv2/system", "qemu:///system"]
    assert hypervisor_uris(
        Settings.from_env({}, machines_file=project.machines_file, connect="test:///default")
    ) == ["test:///default"]
    assert hypervisor_uris(Settings.from_env({"LIBVIRT_URI": "qemu:///session"})) == ["qemu:///session"]


def test_uri_precedence(project: Project) -> None:
    s = Settings.from_env({"LIBVIRT_URI": "qemu:///session"}, machines_file=project.machines_file)
    m = machine_entry(libvirt_uri="qemu+ssh://hv2/system")
    project.write_machines({"a": m, "b": machine_entry()})
    assert s.uri_for(s.machine("a")) == "qemu+ssh://hv2/system"
    assert s.uri_for(s.machine("b")) == "qemu:///session"
    forced = Settings.from_env({}, machines_file=project.machines_file, connect="test:///default")
    assert forced.uri_for(forced.machine("a")) == "test:///default"


def test_upgrade_needs_names_or_all(run_cli: RunCli) -> None:
    r = run_cli("upgrade")
    assert r.exit_code == 2 and "--all" in r.stderr
    r = run_cli("upgrade", "web1", "--all")
    assert r.exit_code == 2


def test_rollback_on_test_driver(run_cli: RunCli) -> None:
    r = run_cli("rollback", "web1")
    assert r.exit_code == 1 and "ivm define web1" in r.stderr
    r = run_cli("gc", "--dry-run")
    assert r.exit_code == 0, r.output
    r = run_cli("gc", "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    [one] = json.loads(r.stdout)
    assert one["uri"] == "test:///default" and one["dry_run"] is True and one["deleted"] == []


def test_gc_dry_run_names_an_unused_base_and_keeps_it(
    run_cli: RunCli, test_driver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IVM_POOL", "default-pool")
    monkeypatch.setenv("IVM_POOL_PATH", "/default-pool")
    pool = test_driver.storagePoolLookupByName("default-pool")
    base = f"base-{secrets.token_hex(16)}.qcow2"
    volume = pool.createXML(volume_xml(base, 1024 * 1024, "raw"), 0)
    try:
        r = run_cli("gc", "--dry-run")
        assert r.exit_code == 0, r.output
        assert f"test:///default: would delete {base}" in r.stdout.splitlines()
        assert r.stdout.splitlines()[-1].endswith("would delete")
        assert base in pool.listVolumes()  # a dry run deletes nothing
    finally:
        volume.delete(0)


@pytest.mark.parametrize("env", [{"OVMF_VARS": "/x"}])
def test_firmware_needs_both_paths(env: dict[str, str]) -> None:
    with pytest.raises(UsageError, match="OVMF_VARS is set without OVMF_CODE") as caught:
        Settings.from_env(env)
    assert caught.value.hint == "set both, or neither"


class _StubbornGuest:
    """A domain that ignores the ACPI power button."""

    def name(self) -> str:
        return "stubborn"

    def state(self) -> list[int]:
        import libvirt

        return [libvirt.VIR_DOMAIN_RUNNING, 0]


def test_a_shutdown_wait_says_what_it_waits_for_and_how_long(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from ivm.hypervisor.domains import Domains
    from ivm.hypervisor.handles import Connection, DomainHandle

    with caplog.at_level(logging.INFO, logger="ivm.domains"):
        guest = cast(DomainHandle, _StubbornGuest())  # a partial fake: name() and state() only
        assert Domains(cast(Connection, None)).wait_off(guest, timeout=0.7, every=0.3) is False
    lines = caplog.messages
    assert lines[0] == "waiting up to 0.7 s for stubborn to shut down (ACPI power button)"
    assert any(
        m.startswith("still waiting for stubborn to shut down: ") and m.endswith("of 0.7 s") for m in lines
    )
