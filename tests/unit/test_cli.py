"""The command line through CliRunner, on libvirt's test driver: help, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from lxml import etree

from ivm.cli import cli
from ivm.domain_xml import DomainSpec, Metadata, domain_mac, domain_uuid, domain_xml
from ivm.hypervisor.domains import State
from ivm.identity.source import generate_missing
from ivm.machines import parse_machines
from ivm.ops.status import VmState
from ivm.volumes import vm_volumes
from tests.conftest import Project, RunCli, machine_entry

COMMANDS = cli.list_commands(click.Context(cli))  # the lazy group names them without importing


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ivm: error: ") and "Traceback" not in stderr
    return lines[0]


def test_top_level_help_lists_every_command(run_cli: RunCli) -> None:
    r = run_cli("--help", uri="")
    assert r.exit_code == 0
    for name in COMMANDS:
        assert name in r.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(run_cli: RunCli, command: str) -> None:
    r = run_cli(command, "--help", uri="")
    assert r.exit_code == 0 and "Usage: " in r.stdout and len(r.stdout.splitlines()) >= 4


def test_version(run_cli: RunCli) -> None:
    assert run_cli("--version", uri="").stdout.startswith("ivm, version ")


@pytest.mark.parametrize(
    "args", [("start", "Bad"), ("create", "-x"), ("define", "a" * 64), ("destroy", "web_1")]
)
def test_invalid_names_exit_2(run_cli: RunCli, args: tuple[str, ...]) -> None:
    r = run_cli(*args)
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_unknown_machine_exits_2_with_hint(run_cli: RunCli) -> None:
    r = run_cli("create", "db9")
    assert r.exit_code == 2
    line = one_error_line(r.stderr)
    assert "unknown machine 'db9' (known: web1, web2)" in line and "machines/db9/meta.nix" in line


def test_malformed_machines_json(run_cli: RunCli, project: Project) -> None:
    project.machines_file.write_text("{not json")
    r = run_cli("create", "web1")
    assert r.exit_code == 2 and "not valid JSON (line 1" in one_error_line(r.stderr)


def test_missing_machines_file(run_cli: RunCli, project: Project) -> None:
    project.machines_file.unlink()
    r = run_cli("status")
    assert r.exit_code == 2 and "does not exist" in one_error_line(r.stderr)


def test_unusable_uri_exits_1(run_cli: RunCli) -> None:
    r = run_cli("start", "web1", uri="qemu+unix:///system?socket=/nonexistent/sock")
    assert r.exit_code == 1
    assert "cannot connect to libvirt" in one_error_line(r.stderr)


def test_missing_image_exits_2(run_cli: RunCli, tmp_path: Path) -> None:
    r = run_cli("xml", "web1", "--image", str(tmp_path / "nope.qcow2"))
    assert r.exit_code == 2 and "does not exist" in one_error_line(r.stderr)


def test_text_file_is_not_a_disk_image(run_cli: RunCli, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 200)
    r = run_cli("xml", "web1", "--image", str(text))
    assert r.exit_code == 2 and "not a disk image" in one_error_line(r.stderr)


def test_xml_prints_a_domain_without_store_paths(run_cli: RunCli, raw_image: Path, project: Project) -> None:
    r = run_cli("xml", "web1", "--image", str(raw_image))
    assert r.exit_code == 0, r.output
    assert "/nix/store" not in r.stdout
    assert "<name>web1</name>" in r.stdout and "PRIVATE KEY" not in r.stdout


def test_xml_before_create_writes_nothing_and_says_what_it_cannot_know(
    run_cli: RunCli, raw_image: Path, project: Project
) -> None:
    r = run_cli("xml", "web1", "--image", str(raw_image))
    assert r.exit_code == 0, r.output
    assert not project.machine_dir("web1").exists()  # printing never generates identity files
    first, rest = r.stdout.split("\n", 1)
    assert first.startswith("<!-- preview: machines/web1/machine-id does not exist yet")
    assert rest.startswith('<domain type="test">')
    assert "<uuid>" not in rest and "<mac " not in rest and "<interface" in rest
    etree.fromstring(r.stdout.encode())  # still one well-formed document


def test_xml_with_a_machine_id_shows_the_uuid_and_mac_define_will_use(
    run_cli: RunCli, raw_image: Path, project: Project
) -> None:
    d = project.machine_dir("web1")
    d.mkdir()
    (d / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    r = run_cli("xml", "web1", "--image", str(raw_image))
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith('<domain type="test">')
    assert f"<uuid>{domain_uuid('0123456789abcdef0123456789abcdef')}</uuid>" in r.stdout
    assert f'<mac address="{domain_mac("0123456789abcdef0123456789abcdef")}"/>' in r.stdout
    assert sorted(p.name for p in d.iterdir()) == ["machine-id"]


def test_identity_errors_are_usage_errors(run_cli: RunCli, raw_image: Path, project: Project) -> None:
    d = project.machine_dir("web1")
    d.mkdir()
    (d / "machine-id").write_text("nope\n")
    r = run_cli("xml", "web1", "--image", str(raw_image))
    assert r.exit_code == 2
    assert "machine-id must be 32 lowercase hexadecimal" in one_error_line(r.stderr)


def test_identity_disk_command(run_cli: RunCli, project: Project, tmp_path: Path, raw_image: Path) -> None:
    generate_missing(project.machine_dir("web1"), "web1")
    out = tmp_path / "id.img"
    r = run_cli("identity-disk", str(project.machine_dir("web1")), str(out), uri="")
    assert r.exit_code == 0 and out.stat().st_size == 4 * 1024 * 1024
    r = run_cli("identity-disk", str(tmp_path / "empty"), str(out), uri="")
    assert r.exit_code == 2


def test_status_and_list_on_an_empty_pool(run_cli: RunCli) -> None:
    r = run_cli("status", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [row["name"] for row in rows] == ["web1", "web2"]
    assert {row["state"] for row in rows} == {"not defined"}
    assert {(row["reachable"], row["error"]) for row in rows} == {(True, None)}
    r = run_cli("list")
    assert r.exit_code == 0 and r.stdout.splitlines()[0].startswith("web1")


def test_status_json_keeps_the_error_out_of_the_state(run_cli: RunCli) -> None:
    """An unreachable hypervisor: state is "unknown" and `error` says why, so a consumer of the
    JSON never finds a message where a state belongs."""
    unreachable = "qemu+unix:///system?socket=/nonexistent/sock"  # accepted, but nothing listens
    r = run_cli("status", "--json", "--no-eval", uri=unreachable)
    assert r.exit_code == 1, r.output
    rows = json.loads(r.stdout)
    assert [(row["name"], row["state"], row["reachable"]) for row in rows] == [
        ("web1", "unknown", False),
        ("web2", "unknown", False),
    ]
    assert all(row["error"].startswith(f"cannot connect to libvirt at {unreachable}") for row in rows)
    r = run_cli("list", uri=unreachable)
    assert r.exit_code == 1 and r.stdout.startswith("web1  unreachable: cannot connect"), r.stdout


def test_every_domain_state_is_a_vm_state() -> None:
    """`status` turns a domain's state into a VmState: a new domain state needs a VmState too."""
    assert {s.value for s in State} <= {v.value for v in VmState}
    assert VmState.UNKNOWN.value not in {s.value for s in State}


def _define_on_test_driver(conn: Any, name: str) -> None:
    machine = parse_machines(json.dumps({"version": 1, "machines": {name: machine_entry()}}))[name]
    spec = DomainSpec(
        name,
        machine,
        "0123456789abcdef0123456789abcdef",
        "ivm",
        vm_volumes(name),
        Metadata(name, "a" * 32, None, "0"),
        virt_type="test",
    )
    conn.defineXML(domain_xml(spec)).create()


def test_stop_and_destroy_on_test_driver(run_cli: RunCli, project: Project, test_driver: Any) -> None:
    project.write_machines({"cli-stop": machine_entry()})
    _define_on_test_driver(test_driver, "cli-stop")
    r = run_cli("destroy", "cli-stop")
    assert r.exit_code == 1 and "is running" in one_error_line(r.stderr) and "--force" in r.stderr
    r = run_cli("stop", "cli-stop", "--timeout", "5")
    assert r.exit_code == 0 and "stopped" in r.stdout
    assert "already stopped" in run_cli("stop", "cli-stop").stdout
    r = run_cli("destroy", "cli-stop")
    assert r.exit_code == 0 and "undefined" in r.stdout
    assert "nothing to destroy" in run_cli("destroy", "cli-stop").stdout


def test_start_of_undefined_vm_says_what_to_do(run_cli: RunCli) -> None:
    r = run_cli("start", "web2")
    assert r.exit_code == 1 and "ivm define web2" in one_error_line(r.stderr)


def test_debug_shows_traceback_for_errors(run_cli: RunCli) -> None:
    r = run_cli("--debug", "start", "web2")
    assert r.exit_code == 1 and "Traceback" in r.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("start",), "Missing argument 'NAME'; see 'ivm start --help'"),
        (("start", "--bogus", "web1"), "No such option '--bogus'"),
        (("nope",), "No such command 'nope'; see 'ivm --help'"),
        (("stop", "web1", "--timeout", "abc"), "Invalid value for '--timeout'"),
        (("upgrade",), "name the VMs to upgrade, or pass --all"),
    ],
)
def test_click_usage_errors_are_one_line_too(run_cli: RunCli, args: tuple[str, ...], says: str) -> None:
    r = run_cli(*args)
    assert r.exit_code == 2 and says in one_error_line(r.stderr)


def test_bare_ivm_prints_short_usage_not_the_help() -> None:
    r = CliRunner().invoke(cli, [])
    assert r.exit_code == 2 and "ivm: error" not in r.stderr
    lines = r.stderr.splitlines()
    assert lines[0].startswith("Usage: ivm") and len(lines) <= 5 and "Commands: " in r.stderr
    assert "build" in lines[1] and "up" in lines[1]
    assert "Options:" not in r.stderr and "ivm up NAME --image FILE" in r.stderr


def test_mistyped_uri_is_named_not_the_daemon(run_cli: RunCli) -> None:
    r = run_cli("start", "web1", uri="qemu:///sytem")
    line = one_error_line(r.stderr)
    # The URI rules refuse it before libvirt is asked, naming the misspelt part and the right forms.
    assert r.exit_code == 2 and "'qemu:///sytem' is refused" in line
    assert "not /sytem" in line and "qemu:///system" in line
    assert "start the libvirt daemon" not in line


def test_console_says_what_is_wrong_before_virsh(
    run_cli: RunCli, project: Project, test_driver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ivm.cli.vm.find_tool", lambda *_a: "/bin/false")
    monkeypatch.setattr("ivm.cli.vm.os.execv", lambda *_a: pytest.fail("virsh must not run"))
    r = run_cli("console", "web2")
    assert r.exit_code == 1 and "web2 is not defined" in one_error_line(r.stderr)
    project.write_machines({"cli-console": machine_entry()})
    _define_on_test_driver(test_driver, "cli-console")
    test_driver.lookupByName("cli-console").destroy()
    try:
        r = run_cli("console", "cli-console")
        assert r.exit_code == 1 and "ivm start cli-console" in one_error_line(r.stderr)
    finally:
        test_driver.lookupByName("cli-console").undefine()
