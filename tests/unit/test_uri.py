"""libvirt URIs are hostile input (a commit to machines/ sets them): only local daemons and
encrypted, host-checked transports pass, in machines.json, --connect and LIBVIRT_URI alike."""

from __future__ import annotations

import os
import pwd
import socket
from pathlib import Path

import pytest

from ivm.errors import ToolError, UsageError
from ivm.hypervisor.connection import connect
from ivm.hypervisor.uri import Transport, UnsafeUriError, parse_uri, secret_notice
from tests.conftest import Project, RunCli, machine_entry

GOOD = {
    "qemu:///system": (Transport.LOCAL, ""),
    "qemu:///session": (Transport.LOCAL, ""),
    "qemu+unix:///system?socket=/run/libvirt/libvirt-sock": (Transport.UNIX, ""),
    "qemu+ssh://root@host1/system": (Transport.SSH, "root@host1"),
    "qemu+ssh://host1:2222/system?no_tty=1&mode=direct": (Transport.SSH, "host1:2222"),
    "qemu+libssh2://admin@10.0.0.2/system?sshauth=agent,privkey": (Transport.LIBSSH2, "admin@10.0.0.2"),
    "qemu+libssh://[fd00::2]/system": (Transport.LIBSSH, "[fd00::2]"),
    "qemu+tls://host1.example/system": (Transport.TLS, "host1.example"),
    "qemu://host1/system": (Transport.TLS, "host1"),
    "test:///default": (Transport.LOCAL, ""),
}

BAD = {
    "qemu+ext:///system?command=./machines/evil/pwn": "ext transport runs a program",
    "qemu+ext:///system": "ext transport runs a program",
    "qemu+tcp://host1/system": "without encryption",
    "qemu+ssh://host1/system?command=/bin/sh": "command= parameter runs a program",
    "qemu+ssh://host1/system?netcat=/tmp/nc": "netcat= parameter runs a program",
    "qemu+ssh://host1/system?proxy=netcat": "proxy= parameter",
    "qemu+ssh://host1/system?keyfile=/home/u/.ssh/id": "keyfile= parameter chooses the SSH private key",
    "qemu+tls://host1/system?pkipath=/tmp/pki": "pkipath= parameter",
    "qemu+tls://host1/system?no_verify=1": "no_verify= parameter turns off",
    "qemu+ssh://host1/system?known_hosts=./machines/evil/kh": "known_hosts= parameter",
    "qemu+libssh2://host1/system?known_hosts_verify=ignore": "known_hosts_verify= parameter",
    "qemu+tls://host1/system?tls_priority=NORMAL:+NULL": "tls_priority= parameter",
    "qemu+ssh://host1/system?name=qemu+ext:///system": "name= parameter",
    "qemu+ssh://host1/system?comm%61nd=x": "characters libvirt decodes",
    "qemu+ssh://host1/system;command=x": "characters libvirt decodes",
    "qemu+ssh://host1/system?socket=/tmp/s": "socket= is accepted only with qemu+unix",
    "qemu:///system?socket=/tmp/s": "socket= is accepted only with qemu+unix",
    "qemu+ssh://-oProxyCommand=x/system": "not a host name",
    "qemu+ssh://-oFoo/system": "not a host name",
    "qemu+ssh://-l@host/system": "not a host name",
    "qemu+ssh:///system": "needs a host",
    "qemu+unix://host1/system": "takes no host",
    "qemu:///embed?root=/tmp/x": "not one ivm accepts",
    "qemu:///embed": "must be /system or /session",
    "test:///tmp/domains.xml": "only test:///default",
    "xen:///system": "not xen",
    "qemu+ftp://h/system": "not one ivm uses",
    "qemu:///system extra": "characters libvirt decodes",
    "qemu:///system?mode=legacy&mode=direct": "given twice",
    "qemu:///system?sshauth=agent": "belong to the ssh transports",
    "nope": "not a libvirt URI",
    "qemu:///system\x1b[2J": "characters libvirt decodes",
}


@pytest.mark.parametrize("uri", GOOD)
def test_safe_uris_pass(uri: str) -> None:
    parsed = parse_uri(uri)
    assert (parsed.transport, parsed.host) == GOOD[uri]


@pytest.mark.parametrize("uri", BAD)
def test_unsafe_uris_are_refused(uri: str) -> None:
    with pytest.raises(UnsafeUriError, match=BAD[uri].replace("+", r"\+")):
        parse_uri(uri)


def evil_program(project: Project) -> tuple[Path, Path]:
    """machines/evil/pwn: a program that leaves a mark if anything runs it."""
    mark = project.root / "PWNED"
    pwn = project.machine_dir("evil") / "pwn"
    pwn.parent.mkdir()
    pwn.write_text(f"#!/bin/sh\ntouch {mark}\n")
    pwn.chmod(0o755)
    return pwn, mark


def test_ext_uri_in_machines_json_runs_nothing_on_list(
    project: Project, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: a teammate's meta.nix sets libvirt_uri; a read-only `ivm list` must not run it."""
    _pwn, mark = evil_program(project)
    monkeypatch.chdir(project.root)
    project.write_machines(
        {"evil": machine_entry(libvirt_uri="qemu+ext:///system?command=./machines/evil/pwn")}
    )
    r = run_cli("list", uri="")
    assert r.exit_code == 2, r.output
    assert "machines.evil.libvirt_uri must be null or a libvirt URI ivm accepts" in r.stderr
    assert "ext transport runs a program" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not mark.exists()


@pytest.mark.parametrize("where", ["--connect", "LIBVIRT_URI", "LIBVIRT_DEFAULT_URI"])
def test_ext_uri_from_the_command_line_or_environment_runs_nothing(
    project: Project, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    pwn, mark = evil_program(project)
    uri = f"qemu+ext:///system?command={pwn}"
    if where != "--connect":
        monkeypatch.setenv(where, uri)
    r = run_cli("list", uri=uri if where == "--connect" else "")
    assert r.exit_code == 2, r.output
    assert f"ivm: error: {where} '{uri}' is refused: the ext transport runs a program" in r.stderr
    assert not mark.exists()


def test_the_connection_door_refuses_unsafe_uris_whatever_their_source(project: Project) -> None:
    pwn, mark = evil_program(project)
    with pytest.raises(UsageError, match="is refused"), connect(f"qemu+ext:///system?command={pwn}"):
        pass
    assert not mark.exists()


def test_socket_of_another_user_is_refused(tmp_path: Path) -> None:
    """qemu+unix with socket= may only reach a socket of root or of the user running ivm."""
    if os.getuid() != 0:
        pytest.skip("needs root to give the socket to another user")
    folder = tmp_path / "sock"
    folder.mkdir()
    path = folder / "fake-libvirt"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))  # bound, not listening: a connection is refused at once
        os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
        refused = pytest.raises(UsageError, match="not a socket owned by root or by you")
        with refused, connect(f"qemu+unix:///system?socket={path}"):
            pass
        os.chown(path, 0, -1)
        with (
            pytest.raises(ToolError, match="cannot connect") as caught,
            connect(  # libvirt tries, fails
                f"qemu+unix:///system?socket={path}"
            ),
        ):
            pass
        assert not isinstance(caught.value, UsageError)
    finally:
        server.close()


def test_a_private_key_leaving_the_machine_is_announced() -> None:
    assert secret_notice(parse_uri("qemu:///system"), "web1-identity.img") is None
    line = secret_notice(parse_uri("qemu+ssh://root@hv2/system"), "web1-identity.img")
    assert line == "sending a private host key (web1-identity.img) to root@hv2 over ssh (encrypted)"
