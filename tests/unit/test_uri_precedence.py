"""Which libvirt URI a VM is reached at: --connect, the machine's libvirt_uri, LIBVIRT_URI,
libvirt's own LIBVIRT_DEFAULT_URI, then qemu:///system; the same order the Justfile applies."""

from __future__ import annotations

import pytest

from ivm.config import Settings
from tests.conftest import Project, RunCli, machine_entry

CASES = [
    ({}, "qemu:///system"),
    ({"LIBVIRT_DEFAULT_URI": "qemu:///session"}, "qemu:///session"),
    ({"LIBVIRT_URI": "test:///default", "LIBVIRT_DEFAULT_URI": "qemu:///session"}, "test:///default"),
    ({"LIBVIRT_URI": "", "LIBVIRT_DEFAULT_URI": "qemu:///session"}, "qemu:///session"),
    ({"LIBVIRT_URI": "test:///default"}, "test:///default"),
]


@pytest.mark.parametrize(("env", "uri"), CASES)
def test_environment(project: Project, env: dict[str, str], uri: str) -> None:
    project.write_machines(
        {"plain": machine_entry(), "remote": machine_entry(libvirt_uri="qemu+ssh://hv2/system")}
    )
    s = Settings.from_env(env, machines_file=project.machines_file)
    assert s.uri_for(s.machine("plain")) == uri
    # a machine that names its hypervisor keeps it, whatever the environment says
    assert s.uri_for(s.machine("remote")) == "qemu+ssh://hv2/system"
    forced = Settings.from_env(env, machines_file=project.machines_file, connect="test:///default")
    assert forced.uri_for(forced.machine("remote")) == "test:///default"


def test_the_cli_reads_libvirt_default_uri(run_cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "test:///default")
    r = run_cli("start", "web1", uri="")
    assert r.exit_code == 1 and "web1 is not defined" in r.stderr, r.stderr
    unreachable = "qemu+unix:///system?socket=/nonexistent/sock"  # accepted, but nothing listens
    monkeypatch.setenv("LIBVIRT_URI", unreachable)
    r = run_cli("start", "web1", uri="")
    assert r.exit_code == 1 and f"cannot connect to libvirt at {unreachable}" in r.stderr, r.stderr
