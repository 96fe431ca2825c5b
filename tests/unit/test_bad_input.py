"""Bad input, table-driven: every case exits 2 (or 1) with one `ivm: error:` line that names the
problem and the fix, no traceback, and changes nothing (libvirt's pools, volumes and domains, and
the project's files, are the same before and after).

The table (CASES) is shared with tests/integration/test_reliability.py, which replays a subset
against the real daemon.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.conftest import Project, RunCli, machine_entry

# --- the world the cases start from ---------------------------------------------------------------

GOOD_MACHINE_ID = "0123456789abcdef0123456789abcdef\n"


@dataclass(frozen=True)
class Keys:
    """Key files made once per run with ssh-keygen (never committed)."""

    ed25519: Path
    other: Path  # a second ed25519 pair, for mismatched halves
    ecdsa: Path
    locked: Path  # ed25519 with a passphrase


@dataclass(frozen=True)
class Images:
    good: Path  # a self-contained qcow2
    text: Path  # a text file
    backed: Path  # a qcow2 with a backing file
    data_file: Path  # a qcow2 whose clusters live in another file (another VM's identity image)
    raw_data_file: Path  # the same with the data-file-raw flag
    vmdk: Path
    empty_dir: Path  # a directory holding no image


def keygen(path: Path, kind: str = "ed25519", passphrase: str = "") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", "root@test", "-f", str(path)], check=True
    )
    return path


def make_keys(directory: Path) -> Keys:
    return Keys(
        keygen(directory / "ed25519"),
        keygen(directory / "other"),
        keygen(directory / "ecdsa", "ecdsa"),
        keygen(directory / "locked", passphrase="a passphrase"),
    )


def make_images(directory: Path) -> Images:
    def qemu_img(*args: str) -> None:
        subprocess.run(["qemu-img", *args], check=True, capture_output=True)

    good, backed, vmdk = directory / "good.qcow2", directory / "backed.qcow2", directory / "disk.vmdk"
    qemu_img("create", "-q", "-f", "qcow2", str(good), "64M")
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(good), str(backed))
    qemu_img("create", "-q", "-f", "vmdk", str(vmdk), "64M")
    victim = directory / "other-vm-identity.img"
    victim.write_bytes(b"PRIVATE KEY of another VM\n" * 100)
    data_file, raw_data_file = directory / "data-file.qcow2", directory / "raw-data-file.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={victim}", str(data_file), "64M")
    raw_option = f"data_file={victim},data_file_raw=on"
    qemu_img("create", "-q", "-f", "qcow2", "-o", raw_option, str(raw_data_file), "64M")
    text = directory / "notes.img"
    text.write_text("this is not a disk image\n" * 100)
    (directory / "empty").mkdir()
    return Images(good, text, backed, data_file, raw_data_file, vmdk, directory / "empty")


def write_identity(directory: Path, keys: Keys, name: str = "web1") -> None:
    """A complete, valid identity for VM `name`: nothing is left for `create` to generate."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "machine-id").write_text(GOOD_MACHINE_ID)
    (directory / "hostname").write_text(f"{name}\n")
    key = directory / "ssh_host_ed25519_key"
    shutil.copyfile(keys.ed25519, key)
    key.chmod(0o600)
    shutil.copyfile(f"{keys.ed25519}.pub", directory / "ssh_host_ed25519_key.pub")
    (directory / "tcp_ports").write_text("22\n")
    (directory / "hosts").write_text("192.0.2.10 db db.example.org\n")


@dataclass
class World:
    """What a case may change before it runs."""

    project: Project
    keys: Keys
    images: Images
    env: dict[str, str] = field(default_factory=dict)

    @property
    def vm(self) -> Path:
        return self.project.machine_dir("web1")

    def machines_json(self, doc: Any) -> None:
        text = doc if isinstance(doc, str) else json.dumps(doc)
        # surrogateescape: a lone \udcff is written as the byte 0xff, so files can be invalid UTF-8.
        self.project.machines_file.write_bytes(text.encode("utf-8", "surrogateescape"))

    def machine(self, **overrides: Any) -> None:
        self.project.write_machines({"web1": machine_entry(**overrides)})

    def without(self, field_name: str) -> None:
        entry = machine_entry()
        del entry[field_name]
        self.project.write_machines({"web1": entry})

    def file(self, name: str, data: str | bytes, mode: int | None = None) -> None:
        path = self.vm / name
        path.unlink(missing_ok=True)
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
        if mode is not None:
            path.chmod(mode)


# --- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # after the global options; {good} etc. are replaced by image paths
    problem: str  # regex the error line must match: names the problem
    hint: str  # regex the part after "; " must match: says what to do
    setup: Callable[[World], None] = lambda _w: None
    code: int = 2
    daemon: bool = False  # also replayed against the real daemon (integration)


NAME_HINT = r"lowercase letter first"
JSON_HINT = (
    r"in machines/<name>/meta\.nix and rebuild machines\.json|nix build \.#machines-json|same flake revision"
)
CREATE = ("create", "web1", "--image", "{good}")


def bad_name(case_id: str, name: str, command: str = "create", daemon: bool = False) -> Case:
    return Case(f"name-{case_id}", (command, "--", name), r"invalid VM name", NAME_HINT, daemon=daemon)


def bad_json(case_id: str, problem: str, setup: Callable[[World], None], daemon: bool = False) -> Case:
    return Case(f"json-{case_id}", CREATE, problem, JSON_HINT, setup, daemon=daemon)


def bad_file(
    case_id: str, problem: str, hint: str, setup: Callable[[World], None], daemon: bool = False
) -> Case:
    return Case(f"identity-{case_id}", CREATE, problem, hint, setup, daemon=daemon)


def _key_pair(w: World, private: Path, public: Path) -> None:
    w.file("ssh_host_ed25519_key", private.read_bytes(), 0o600)
    w.file("ssh_host_ed25519_key.pub", public.read_bytes())


def _truncated_key(w: World) -> None:
    lines = w.keys.ed25519.read_text().splitlines()
    w.file("ssh_host_ed25519_key", "\n".join([*lines[:3], lines[-1]]) + "\n", 0o600)


def _symlink(w: World, name: str, target: str) -> None:
    (w.vm / name).unlink(missing_ok=True)
    (w.vm / name).symlink_to(target)


def _outside_target(w: World) -> None:
    outside = w.project.root / "outside-hosts"
    outside.write_text("192.0.2.1 a\n")
    _symlink(w, "hosts", "../../outside-hosts")


def _fifo(w: World) -> None:
    (w.vm / "hosts").unlink()
    os.mkfifo(w.vm / "hosts")


def _dir_instead_of_file(w: World) -> None:
    (w.vm / "tcp_ports").unlink()
    (w.vm / "tcp_ports").mkdir()


def _vm_dir_is_symlink(w: World) -> None:
    real = w.project.root / "elsewhere"
    shutil.move(w.vm, real)
    w.vm.symlink_to(real)


def _vm_dir_is_file(w: World) -> None:
    shutil.rmtree(w.vm)
    w.vm.write_text("not a folder\n")


def _replace_with_dir(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _pub_without_private(w: World) -> None:
    (w.vm / "ssh_host_ed25519_key").unlink()


PORTS_HINT = r"fix tcp_ports: write one port number per line"
KEY_HINT = r"delete both key files|fix ssh_host_ed25519_key"

CASES: tuple[Case, ...] = (
    # VM names: a hostname label, checked before anything else
    bad_name("empty", "", daemon=True),
    bad_name("dotdot", "..", daemon=True),
    bad_name("slash", "/"),
    bad_name("path", "a/b"),
    bad_name("uppercase", "Web1", daemon=True),
    bad_name("64-chars", "a" * 64),
    bad_name("unicode", "wéb1"),
    bad_name("leading-dash", "-web1"),
    bad_name("trailing-dash", "web1-"),
    bad_name("underscore", "web_1"),
    bad_name("digit-first", "1web"),
    bad_name("space", "web 1"),
    bad_name("newline", "web1\n"),
    bad_name("control-char", "web\x1b[31m1"),
    bad_name("dotdot-destroy", "..", "destroy", daemon=True),
    bad_name("slash-start", "/etc", "start"),
    bad_name("uppercase-xml", "WEB1", "xml"),
    bad_name("dot-define", ".", "define"),
    bad_name("status", "../web1", "status"),
    # machines.json
    bad_json(
        "not-json", r"is not valid JSON \(line 1", lambda w: w.machines_json("{version: 1"), daemon=True
    ),
    bad_json("empty-file", r"is not valid JSON", lambda w: w.machines_json("")),
    bad_json("array", r"must be a JSON object", lambda w: w.machines_json([])),
    bad_json(
        "version-2",
        r"unsupported version 2",
        lambda w: w.machines_json({"version": 2, "machines": {}}),
        daemon=True,
    ),
    bad_json("version-missing", r"unsupported version None", lambda w: w.machines_json({"machines": {}})),
    bad_json(
        "version-string",
        r"unsupported version '1'",
        lambda w: w.machines_json({"version": "1", "machines": {}}),
    ),
    bad_json(
        "version-bool",
        r"unsupported version True",
        lambda w: w.machines_json({"version": True, "machines": {}}),
    ),
    bad_json("machines-missing", r"machines must be an object", lambda w: w.machines_json({"version": 1})),
    bad_json(
        "machines-list",
        r"machines must be an object",
        lambda w: w.machines_json({"version": 1, "machines": []}),
    ),
    bad_json(
        "extra-top-field",
        r": extra is not a known field",
        lambda w: w.machines_json({"version": 1, "machines": {}, "extra": 1}),
    ),
    bad_json(
        "missing-system", r"machines\.web1\.system is missing", lambda w: w.without("system"), daemon=True
    ),
    bad_json("extra-field", r"machines\.web1\.disk is not a known field", lambda w: w.machine(disk=1)),
    bad_json("vcpus-string", r"vcpus must be an integer, not str", lambda w: w.machine(vcpus="2")),
    bad_json("vcpus-bool", r"vcpus must be an integer, not bool", lambda w: w.machine(vcpus=True)),
    bad_json("vcpus-float", r"vcpus must be an integer, not float", lambda w: w.machine(vcpus=2.0)),
    bad_json("vcpus-zero", r"vcpus must be between 1 and 512, not 0", lambda w: w.machine(vcpus=0)),
    bad_json(
        "memory-negative",
        r"memory_mib must be between 64 and \d+, not -1",
        lambda w: w.machine(memory_mib=-1),
    ),
    bad_json(
        "memory-huge", r"memory_mib must be between", lambda w: w.machine(memory_mib=10**15), daemon=True
    ),
    bad_json("var-negative", r"var_size_gib must be between 1", lambda w: w.machine(var_size_gib=-20)),
    bad_json("var-huge", r"var_size_gib must be between", lambda w: w.machine(var_size_gib=2**64)),
    bad_json("system-unknown", r"system must be one of", lambda w: w.machine(system="riscv64-linux")),
    bad_json("system-list", r"system must be one of .* not \[\]", lambda w: w.machine(system=[])),
    bad_json(
        "network-type-list",
        r"network\.type must be network, bridge, user or none, not \{\}",
        lambda w: w.machine(network={"type": {}, "name": "x"}),
    ),
    bad_json(
        "network-type",
        r"network\.type must be network, bridge, user or none, not 'macvtap'",
        lambda w: w.machine(network={"type": "macvtap", "name": "eth0"}),
        daemon=True,
    ),
    bad_json("network-string", r"network must be an object", lambda w: w.machine(network="default")),
    bad_json(
        "network-no-name",
        r"network\.name must name a libvirt bridge",
        lambda w: w.machine(network={"type": "bridge"}),
    ),
    bad_json(
        "network-name-space",
        r"network\.name must name a libvirt network",
        lambda w: w.machine(network={"type": "network", "name": "my net"}),
    ),
    bad_json(
        "network-none-extra",
        r"network\.name is not a known field",
        lambda w: w.machine(network={"type": "none", "name": "x"}),
    ),
    bad_json(
        "mac-garbage", r"mac must be null or a MAC address", lambda w: w.machine(mac="zz:zz:zz:zz:zz:zz")
    ),
    bad_json("mac-short", r"mac must be null or a MAC address", lambda w: w.machine(mac="52:54:00:12:34")),
    bad_json("mac-number", r"mac must be null or a MAC address", lambda w: w.machine(mac=525400123456)),
    bad_json("mac-multicast", r"is a multicast address", lambda w: w.machine(mac="01:00:5e:00:00:01")),
    bad_json(
        "uri-garbage", r"libvirt_uri must be null or a libvirt URI", lambda w: w.machine(libvirt_uri="nope")
    ),
    bad_json(
        "uri-space",
        r"libvirt_uri must be null or a libvirt URI",
        lambda w: w.machine(libvirt_uri="qemu:///system extra"),
    ),
    bad_json(
        "uri-ext-command",
        r"libvirt_uri must be null or a libvirt URI ivm accepts \(the ext transport runs a program",
        lambda w: w.machine(libvirt_uri="qemu+ext:///system?command=./machines/web1/pwn"),
        daemon=True,
    ),
    bad_json(
        "uri-tcp",
        r"the tcp transport sends everything, the VM's private host key included, without encryption",
        lambda w: w.machine(libvirt_uri="qemu+tcp://hv2/system"),
    ),
    bad_json(
        "uri-no-verify",
        r"the no_verify= parameter turns off the check of the server's certificate",
        lambda w: w.machine(libvirt_uri="qemu+tls://hv2/system?no_verify=1"),
    ),
    bad_json("image-attr", r"image_attr must be a flake package name", lambda w: w.machine(image_attr="a#b")),
    bad_json(
        "machine-key",
        r"machines\.Web1 is not a valid VM name",
        lambda w: w.project.write_machines({"Web1": machine_entry()}),
    ),
    Case(
        "json-file-missing",
        CREATE,
        r"machines file .* does not exist",
        r"pass --machines FILE",
        lambda w: w.project.machines_file.unlink(),
        daemon=True,
    ),
    Case(
        "json-file-is-dir",
        CREATE,
        r"cannot read machines file .*Is a directory",
        r"pass a UTF-8 JSON file",
        lambda w: _replace_with_dir(w.project.machines_file),
    ),
    Case(
        "json-not-utf8",
        CREATE,
        r"cannot read machines file .*can't decode",
        r"pass a UTF-8 JSON file",
        lambda w: w.machines_json('{"version": 1, "machines": {"\udcff": 1}}'),
    ),
    # identity files in machines/web1/
    bad_file(
        "machine-id-upper",
        r"machine-id must be 32 lowercase",
        r"fix machine-id: delete the file",
        lambda w: w.file("machine-id", GOOD_MACHINE_ID.upper()),
        daemon=True,
    ),
    bad_file(
        "machine-id-zeros",
        r"machine-id must not be all zeros",
        r"fix machine-id",
        lambda w: w.file("machine-id", "0" * 32 + "\n"),
    ),
    bad_file(
        "machine-id-short",
        r"machine-id must be 32 lowercase",
        r"fix machine-id",
        lambda w: w.file("machine-id", "abc\n"),
    ),
    bad_file(
        "hostname",
        r"hostname must be one hostname label",
        r"fix hostname",
        lambda w: w.file("hostname", "Web_1\n"),
    ),
    bad_file(
        "key-truncated",
        r"ssh_host_ed25519_key is (truncated|not an OpenSSH|corrupt)",
        KEY_HINT,
        _truncated_key,
        daemon=True,
    ),
    bad_file(
        "key-garbage",
        r"ssh_host_ed25519_key is not an OpenSSH private key",
        KEY_HINT,
        lambda w: w.file("ssh_host_ed25519_key", "hello\n", 0o600),
    ),
    bad_file(
        "key-ecdsa",
        r"is a ecdsa-sha2-nistp256 key; an ed25519 key is required",
        KEY_HINT,
        lambda w: _key_pair(w, w.keys.ecdsa, Path(f"{w.keys.ecdsa}.pub")),
    ),
    bad_file(
        "key-encrypted",
        r"is protected by a passphrase",
        KEY_HINT,
        lambda w: _key_pair(w, w.keys.locked, Path(f"{w.keys.locked}.pub")),
    ),
    bad_file(
        "key-mode-0640",
        r"is readable by group or others \(mode 0640\)",
        r"run: chmod 600",
        lambda w: (w.vm / "ssh_host_ed25519_key").chmod(0o640),
        daemon=True,
    ),
    bad_file(
        "key-mode-0604",
        r"is readable by group or others \(mode 0604\)",
        r"run: chmod 600",
        lambda w: (w.vm / "ssh_host_ed25519_key").chmod(0o604),
    ),
    bad_file(
        "pub-without-private",
        r"\.pub exists but its private key ssh_host_ed25519_key does not",
        r"copy the private key back",
        _pub_without_private,
    ),
    bad_file(
        "pub-mismatch",
        r"ssh_host_ed25519_key\.pub does not belong to ssh_host_ed25519_key",
        r"regenerate it: ssh-keygen -y",
        lambda w: w.file("ssh_host_ed25519_key.pub", Path(f"{w.keys.other}.pub").read_bytes()),
    ),
    bad_file(
        "pub-garbage",
        r"ssh_host_ed25519_key\.pub is not a public key line",
        r"fix ssh_host_ed25519_key\.pub",
        lambda w: w.file("ssh_host_ed25519_key.pub", "nonsense\n"),
    ),
    bad_file(
        "ports-zero", r"tcp_ports line 1: '0' is not a port", PORTS_HINT, lambda w: w.file("tcp_ports", "0\n")
    ),
    bad_file(
        "ports-65536",
        r"tcp_ports line 2: '65536' is not a port",
        PORTS_HINT,
        lambda w: w.file("tcp_ports", "22\n65536\n"),
        daemon=True,
    ),
    bad_file("ports-negative", r"tcp_ports line 1: '-1'", PORTS_HINT, lambda w: w.file("tcp_ports", "-1\n")),
    bad_file(
        "ports-name",
        r"udp_ports line 1: 'http' is not a port",
        r"fix udp_ports",
        lambda w: w.file("udp_ports", "http\n"),
    ),
    bad_file(
        "hosts-control",
        r"hosts line 1 holds a control character",
        r"fix hosts",
        lambda w: w.file("hosts", "192.0.2.1 db\x1b[2J\n"),
        daemon=True,
    ),
    bad_file(
        "hosts-nul",
        r"hosts line 2 holds a control character",
        r"fix hosts",
        lambda w: w.file("hosts", "127.0.0.1 a\n192.0.2.1 d\x00b\n"),
    ),
    bad_file(
        "hosts-crlf", r"hosts line 1 ends in CR", r"fix hosts", lambda w: w.file("hosts", b"192.0.2.1 db\r\n")
    ),
    bad_file(
        "hosts-not-ip",
        r"hosts line 1: 'db' is not an IP address",
        r"fix hosts",
        lambda w: w.file("hosts", "db 192.0.2.1\n"),
    ),
    bad_file("hosts-not-utf8", r"hosts is not UTF-8", r"fix hosts", lambda w: w.file("hosts", b"\xff\xfe\n")),
    bad_file(
        "resolv-keyword",
        r"resolv\.conf line 1: unknown keyword 'server'",
        r"fix resolv\.conf",
        lambda w: w.file("resolv.conf", "server 192.0.2.53\n"),
    ),
    bad_file(
        "authorized-keys",
        r"admin_authorized_keys line 3 has a key that is not valid base64",
        r"fix admin_authorized_keys",
        lambda w: w.file("admin_authorized_keys", "# admins\n\nssh-ed25519 AAAA!!!! x@y\n"),
    ),
    bad_file(
        "oversized",
        r"hosts is 70000 bytes; identity files are limited to 65536",
        r"shorten hosts",
        lambda w: w.file("hosts", "#" * 69999 + "\n"),
        daemon=True,
    ),
    bad_file(
        "symlink-outside",
        r"hosts is a symbolic link",
        r"identity files must be regular files",
        _outside_target,
        daemon=True,
    ),
    bad_file(
        "symlink-etc",
        r"machine-id is a symbolic link",
        r"identity files must be regular files",
        lambda w: _symlink(w, "machine-id", "/etc/machine-id"),
    ),
    bad_file(
        "symlink-key",
        r"ssh_host_ed25519_key is a symbolic link",
        r"identity files must be regular files",
        lambda w: _symlink(w, "ssh_host_ed25519_key", str(w.keys.ed25519)),
    ),
    bad_file("fifo", r"hosts is not a regular file", r"must be regular files", _fifo),
    bad_file("directory", r"tcp_ports is not a regular file", r"must be regular files", _dir_instead_of_file),
    bad_file(
        "vm-dir-symlink", r"machines/web1 is not a directory", r"make it a plain folder", _vm_dir_is_symlink
    ),
    bad_file("vm-dir-file", r"machines/web1 is not a directory", r"make it a plain folder", _vm_dir_is_file),
    # machine and image
    Case(
        "unknown-machine",
        ("create", "web9", "--image", "{good}"),
        r"unknown machine 'web9' \(known: web1",
        r"add web9 to machines.json \(with Nix: machines/web9/meta\.nix",
        daemon=True,
    ),
    Case(
        "image-missing",
        ("create", "web1", "--image", "{missing}"),
        r"image .*nothing\.qcow2 does not exist",
        r"check the path given to --image",
        daemon=True,
    ),
    Case(
        "image-empty-dir",
        ("create", "web1", "--image", "{empty_dir}"),
        r"holds 0 disk images",
        r"pass the image file itself",
    ),
    Case(
        "image-text",
        ("create", "web1", "--image", "{text}"),
        r"notes\.img is not a disk image",
        r"pass the image built by",
        daemon=True,
    ),
    Case(
        "image-backing-file",
        ("create", "web1", "--image", "{backed}"),
        r"refers to a backing file; a base image must be self-contained",
        r"flatten it into one file: qemu-img convert",
        daemon=True,
    ),
    Case(
        "image-data-file",
        ("create", "web1", "--image", "{data_file}"),
        r"data-file\.qcow2 refers to an external data file; a base image must be self-contained",
        r"flatten it into one file: qemu-img convert",
        daemon=True,
    ),
    Case(
        "image-raw-data-file",
        ("create", "web1", "--image", "{raw_data_file}"),
        r"refers to an external data file",
        r"flatten it into one file",
    ),
    Case(
        "image-data-file-xml",
        ("xml", "web1", "--image", "{data_file}"),
        r"refers to an external data file",
        r"flatten it into one file",
    ),
    Case(
        "image-vmdk",
        ("create", "web1", "--image", "{vmdk}"),
        r"is in vmdk format; ivm imports qcow2 or raw",
        r"convert it: qemu-img convert",
    ),
    Case("image-xml-text", ("xml", "web1", "--image", "{text}"), r"is not a disk image", r"pass the image"),
    Case(
        "ovmf-vars-alone",
        CREATE,
        r"OVMF_VARS is set without OVMF_CODE",
        r"set both, or neither",
        lambda w: w.env.update(OVMF_VARS="/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ),
    Case(
        "define-not-created",
        ("define", "web1"),
        r"web1 has not been created",
        r"run `ivm create web1` first",
        code=1,
    ),
    Case("start-not-defined", ("start", "web1"), r"web1 is not defined", r"run `ivm define web1`", code=1),
)


def expand(args: tuple[str, ...], images: Images) -> list[str]:
    paths = {
        "{good}": images.good,
        "{text}": images.text,
        "{backed}": images.backed,
        "{data_file}": images.data_file,
        "{raw_data_file}": images.raw_data_file,
        "{vmdk}": images.vmdk,
        "{empty_dir}": images.empty_dir,
        "{missing}": images.good.parent / "nothing.qcow2",
    }
    return [str(paths.get(a, a)) for a in args]


# --- what "nothing changed" and "a good error" mean ------------------------------------------------


def libvirt_state(uri: str) -> dict[str, Any]:
    """Every pool (with its volumes) and domain the connection shows: what a failed run must not touch."""
    conn = libvirt.open(uri)
    try:
        pools = {}
        for pool in conn.listAllStoragePools(0):
            active = bool(pool.isActive())
            if active:
                pool.refresh(0)
            pools[pool.name()] = (active, sorted(pool.listVolumes()) if active else None)
        domains = {d.name(): d.state()[0] for d in conn.listAllDomains(0)}
        return {"pools": pools, "domains": domains}
    finally:
        conn.close()


def tree_state(root: Path) -> dict[str, tuple[Any, ...]]:
    """Each path under root with its type, mode and content (symlinks not followed)."""
    out: dict[str, tuple[Any, ...]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            out[str(path.relative_to(root))] = ("link", str(path.readlink()))
        elif stat.S_ISREG(info.st_mode):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(root))] = ("file", stat.S_IMODE(info.st_mode), digest)
        else:
            out[str(path.relative_to(root))] = (
                "other",
                stat.S_IFMT(info.st_mode),
                stat.S_IMODE(info.st_mode),
            )
    return out


def check_error(case: Case, code: int, stdout: str, stderr: str) -> None:
    """One line on stderr: `ivm: error: PROBLEM; HINT`, the problem and hint matching the case."""
    assert "Traceback" not in stdout + stderr, stderr
    assert code == case.code, f"exit {code}, stderr: {stderr!r}"
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    line = lines[0]
    assert line.startswith("ivm: error: "), line
    message, sep, hint = line.removeprefix("ivm: error: ").rpartition("; ")
    assert sep, f"no hint after '; ' in {line!r}"
    assert re.search(case.problem, message), f"{message!r} does not match {case.problem!r}"
    assert re.search(case.hint, hint), f"hint {hint!r} does not match {case.hint!r}"
    assert stdout == "", stdout


# --- the unit-layer run (libvirt's test driver) ----------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    return make_images(tmp_path_factory.mktemp("images"))


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(
    case: Case, project: Project, run_cli: RunCli, keys: Keys, images: Images, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.write_machines({"web1": machine_entry()})
    world = World(project, keys, images)
    write_identity(world.vm, keys)
    case.setup(world)
    for var, value in world.env.items():
        monkeypatch.setenv(var, value)
    before = (libvirt_state("test:///default"), tree_state(project.root))
    result = run_cli(*expand(case.args, images))
    check_error(case, result.exit_code, result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert (libvirt_state("test:///default"), tree_state(project.root)) == before


def test_a_good_input_passes_the_same_checks(
    project: Project, run_cli: RunCli, keys: Keys, images: Images
) -> None:
    """The control: with nothing broken, `xml` succeeds, so the cases above fail for their reason."""
    project.write_machines({"web1": machine_entry()})
    write_identity(project.machine_dir("web1"), keys)
    result = run_cli(*expand(("xml", "web1", "--image", "{good}"), images))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("<domain")
