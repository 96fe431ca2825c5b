"""The guest's identity import (modules/identity-import.sh) and port opener (firewall-ports.sh).

They run in the guest (the initrd and a stage-2 unit), but they are plain Bash over coreutils, so
their rules are tested here on directories: what is copied, with which modes, what is refused and
what is kept. Needs no Nix. The import swaps directories with `mv --exchange` (coreutils >= 9.5,
which the guest has); on an older host coreutils a small shim does that one rename for the test.
"""

from __future__ import annotations

import ctypes
import os
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.nix.nixeval import REPO

IMPORT = REPO / "modules" / "identity-import.sh"
PORTS = REPO / "modules" / "firewall-ports.sh"
REQUIRED = ("machine-id", "hostname", "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub")
BASE_HOSTS = "127.0.0.1 localhost\n::1 localhost\n"
DEFAULT_RESOLV = "nameserver 127.0.0.53\n"

MV_SHIM = f"""#!{sys.executable}
# `mv --exchange --no-target-directory -- A B` with renameat2(RENAME_EXCHANGE); anything else: mv.
import ctypes, os, sys
args = sys.argv[1:]
if "--exchange" in args:
    a, b = [x for x in args if not x.startswith("--")]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) != 0:
        sys.exit(f"mv: {{os.strerror(ctypes.get_errno())}}")
    sys.exit(0)
os.execv("/bin/mv", ["mv", *args])
"""


def coreutils_has_exchange() -> bool:
    out = subprocess.run(["mv", "--help"], capture_output=True, text=True, check=False).stdout
    return "--exchange" in out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Mapping[str, str]:
    if os.geteuid() != 0:
        pytest.skip("the import makes files root-owned (install -o 0), as in the initrd: run as root")
    environ = dict(os.environ, LC_ALL="C")
    if not coreutils_has_exchange():
        if not hasattr(ctypes.CDLL(None), "renameat2"):
            pytest.skip("neither coreutils mv --exchange nor renameat2 in libc")
        shim = tmp_path_factory.mktemp("shim")
        (shim / "mv").write_text(MV_SHIM)
        (shim / "mv").chmod(0o755)
        environ["PATH"] = f"{shim}:{environ['PATH']}"
    return environ


@pytest.fixture(scope="module")
def host_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    d = tmp_path_factory.mktemp("key")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@test", "-f", str(d / "k")],
        check=True,
    )
    return (d / "k").read_bytes(), (d / "k.pub").read_bytes()


class Guest:
    """A disk, a /var and a /run, laid out in a temporary directory."""

    def __init__(self, root: Path, env: Mapping[str, str]) -> None:
        self.env = env
        self.disk = root / "disk"
        self.var = root / "var"
        self.run_dir = root / "run" / "ivm"
        self.identity = self.var / "identity"
        for d in (self.disk, self.var, self.run_dir.parent):
            d.mkdir(parents=True)
        self.base_hosts = root / "base-hosts"
        self.base_hosts.write_text(BASE_HOSTS)
        self.default_resolv = root / "default-resolv.conf"
        self.default_resolv.write_text(DEFAULT_RESOLV)

    def write(self, files: Mapping[str, bytes | str]) -> None:
        for name, data in files.items():
            path = self.disk / name
            path.write_bytes(data.encode() if isinstance(data, str) else data)
            path.chmod(0o600)  # the guest must not keep disk modes

    def clear_disk(self) -> None:
        for path in self.disk.iterdir():
            path.unlink()

    def boot(self) -> subprocess.CompletedProcess[str]:
        args = [self.disk, self.identity, self.run_dir, self.base_hosts, self.default_resolv]
        proc = subprocess.run(
            ["bash", str(IMPORT), *map(str, args)],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc

    def imported(self) -> dict[str, str]:
        return {p.name: p.read_text() for p in sorted(self.identity.iterdir())}


@pytest.fixture
def guest(tmp_path: Path, env: Mapping[str, str]) -> Guest:
    return Guest(tmp_path, env)


@pytest.fixture
def identity(host_key: tuple[bytes, bytes]) -> dict[str, bytes | str]:
    private, public = host_key
    return {
        "machine-id": "0123456789abcdef0123456789abcdef\n",
        "hostname": "web1\n",
        "ssh_host_ed25519_key": private,
        "ssh_host_ed25519_key.pub": public,
        "resolv.conf": "# DNS\nnameserver 192.0.2.53\nsearch example.org\n",
        "hosts": "192.0.2.10 db db.example.org\n",
        "tcp_ports": "# web\n80\n\n443\n",
        "udp_ports": "53\n",
        "admin_authorized_keys": public,
        "user_authorized_keys": b'restrict,command="true" ' + public,
    }


def test_complete_identity_is_imported_root_owned_with_fixed_modes(
    guest: Guest, identity: dict[str, bytes | str]
) -> None:
    guest.write(identity)
    proc = guest.boot()
    assert set(guest.imported()) == set(identity)
    st = guest.identity.stat()
    assert stat.S_IMODE(st.st_mode) == 0o755 and (st.st_uid, st.st_gid) == (0, 0)
    for path in guest.identity.iterdir():
        st = path.stat()
        expected = 0o600 if path.name == "ssh_host_ed25519_key" else 0o644
        assert stat.S_IMODE(st.st_mode) == expected, path.name
        assert (st.st_uid, st.st_gid) == (0, 0)
        data = identity[path.name]
        assert path.read_bytes() == (data.encode() if isinstance(data, str) else data)
    assert "imported 10 files" in proc.stderr


def test_only_known_names_are_copied(guest: Guest, identity: dict[str, bytes | str]) -> None:
    guest.write({**identity, "authorized_keys": "ssh-ed25519 AAAA x\n", "evil.sh": "#!/bin/sh\n"})
    guest.boot()
    assert set(guest.imported()) == set(identity)


def test_optional_files_may_be_absent(guest: Guest, identity: dict[str, bytes | str]) -> None:
    guest.write({name: identity[name] for name in REQUIRED})
    guest.boot()
    assert set(guest.imported()) == set(REQUIRED)


def test_a_new_identity_replaces_the_old_directory_whole(
    guest: Guest, identity: dict[str, bytes | str]
) -> None:
    guest.write(identity)
    guest.boot()
    guest.clear_disk()
    guest.write({**{name: identity[name] for name in REQUIRED}, "tcp_ports": "8080\n"})
    guest.boot()
    imported = guest.imported()
    assert imported["tcp_ports"] == "8080\n"
    assert "udp_ports" not in imported  # removed from the disk, so gone from /var/identity
    assert sorted(p.name for p in guest.var.iterdir()) == ["identity"]  # no staging left


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("machine-id", "0123456789ABCDEF0123456789ABCDEF\n", "machine-id must be 32 lowercase"),
        ("machine-id", "00000000000000000000000000000000\n", "must not be all zeros"),
        ("machine-id", "0123456789abcdef0123456789abcdef\n\n\n", "machine-id must be 32"),
        ("hostname", "Web_1\n", "hostname must be one hostname label"),
        ("hostname", "-web\n", "hostname must be one hostname label"),
        ("ssh_host_ed25519_key", "not a key\n", "is not an OpenSSH private key"),
        ("ssh_host_ed25519_key.pub", "ssh-rsa AAAAB3Nza x\n", "must be an ssh-ed25519"),
        ("tcp_ports", "80\n70000\n", "tcp_ports line '70000'"),
        ("udp_ports", "0\n", "udp_ports line '0'"),
        ("tcp_ports", "80 443\n", "tcp_ports line '80 443'"),
        ("hosts", "db.example.org 192.0.2.1\n", "is not an IP address"),
        ("hosts", "192.0.2.1\n", "needs at least one host name"),
        ("resolv.conf", "nameserver dns.example.org\n", "is not an IP address"),
        ("resolv.conf", "rm -rf /\n", "unknown keyword 'rm'"),
        ("admin_authorized_keys", "hello world\n", "holds no public key"),
        ("hosts", "192.0.2.1 db\r\n", "control character"),
        ("resolv.conf", b"nameserver 192.0.2.1\x00\n", "NUL byte"),
        ("user_authorized_keys", "#" * 65537, "identity files are limited to 65536"),
    ],
)
def test_an_invalid_identity_keeps_the_previous_one(
    guest: Guest, identity: dict[str, bytes | str], name: str, data: bytes | str, reason: str
) -> None:
    guest.write(identity)
    guest.boot()
    before = guest.imported()
    guest.write({name: data})
    proc = guest.boot()
    assert "identity disk rejected" in proc.stderr
    assert reason in proc.stderr
    assert guest.imported() == before


def test_a_missing_required_file_keeps_the_previous_identity(
    guest: Guest, identity: dict[str, bytes | str]
) -> None:
    guest.write(identity)
    guest.boot()
    (guest.disk / "ssh_host_ed25519_key").unlink()
    proc = guest.boot()
    assert "ssh_host_ed25519_key is missing" in proc.stderr
    assert set(guest.imported()) == set(identity)


def test_a_symlink_on_the_disk_is_refused(guest: Guest, identity: dict[str, bytes | str]) -> None:
    guest.write({name: identity[name] for name in REQUIRED})
    (guest.disk / "hosts").symlink_to("/etc/shadow")
    proc = guest.boot()
    assert "hosts is not a regular file" in proc.stderr
    assert not guest.identity.exists()


def test_no_disk_boots_with_the_previous_identity(guest: Guest, identity: dict[str, bytes | str]) -> None:
    guest.write(identity)
    guest.boot()
    guest.clear_disk()
    proc = guest.boot()
    assert "no identity disk" in proc.stderr
    assert set(guest.imported()) == set(identity)


def test_first_boot_without_disk_still_prepares_resolv_conf_and_hosts(guest: Guest) -> None:
    proc = guest.boot()
    assert "no identity disk" in proc.stderr
    assert not guest.identity.exists()
    assert (guest.run_dir / "resolv.conf").read_text() == DEFAULT_RESOLV
    assert (guest.run_dir / "hosts").read_text() == BASE_HOSTS


def test_resolv_conf_and_hosts_come_from_the_identity(guest: Guest, identity: dict[str, bytes | str]) -> None:
    guest.write(identity)
    guest.boot()
    assert (guest.run_dir / "resolv.conf").read_text() == identity["resolv.conf"]
    hosts = (guest.run_dir / "hosts").read_text()
    assert hosts.startswith(BASE_HOSTS)
    assert hosts.endswith(str(identity["hosts"]))
    for name in ("resolv.conf", "hosts"):
        assert stat.S_IMODE((guest.run_dir / name).stat().st_mode) == 0o644


def test_the_script_is_valid_for_shellcheck() -> None:
    shellcheck = subprocess.run(["which", "shellcheck"], capture_output=True, check=False)
    if shellcheck.returncode != 0:
        pytest.skip("shellcheck is not installed (the Nix build runs it too)")
    for script in (IMPORT, PORTS):
        proc = subprocess.run(
            ["shellcheck", "-s", "bash", str(script)], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stdout


def run_ports(tmp_path: Path, files: Mapping[str, str]) -> tuple[int, list[str], str]:
    """Runs firewall-ports.sh against a fake nft that records its arguments."""
    identity = tmp_path / "identity"
    identity.mkdir()
    for name, text in files.items():
        (identity / name).write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "nft.log"
    (bin_dir / "nft").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (bin_dir / "nft").chmod(0o755)
    proc = subprocess.run(
        ["bash", str(PORTS), str(identity)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}"),
        check=False,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return proc.returncode, calls, proc.stderr


def test_listed_ports_are_loaded_into_the_sets(tmp_path: Path) -> None:
    code, calls, _ = run_ports(tmp_path, {"tcp_ports": "# web\n80\n 443 \n\n", "udp_ports": "053\n"})
    assert code == 0
    assert calls == [
        "flush set inet nixos-fw ivm_tcp_ports",
        "add element inet nixos-fw ivm_tcp_ports { 80,443 }",
        "flush set inet nixos-fw ivm_udp_ports",
        "add element inet nixos-fw ivm_udp_ports { 53 }",
    ]


def test_a_file_with_a_bad_line_opens_none_of_its_ports(tmp_path: Path) -> None:
    code, calls, err = run_ports(tmp_path, {"tcp_ports": "80\nhttp\n"})
    assert code == 0
    assert calls == ["flush set inet nixos-fw ivm_tcp_ports", "flush set inet nixos-fw ivm_udp_ports"]
    assert "'http' is not a port number" in err
