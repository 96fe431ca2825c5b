"""The guest's identity import (modules/identity-import.sh) and port opener (firewall-ports.sh).

They run in the guest (the initrd and a stage-2 unit), but they are plain Bash over coreutils, so
their rules are tested here on directories: what is copied, with which modes, what is refused and
what is kept. Needs no Nix. The import swaps directories with `mv --exchange` (coreutils >= 9.5,
which the guest has); on an older host coreutils a small shim does that one rename for the test.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.cases import case_id, load
from tests.cases.keys import Keys, with_certificates
from tests.nix.nixeval import REPO

IMPORT = REPO / "modules" / "identity-import.sh"
PORTS = REPO / "modules" / "firewall-ports.sh"
REQUIRED = ("machine-id", "hostname", "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub")
KEYS = ("admin_authorized_keys", "user_authorized_keys")
# What a refused identity disk costs the kept identity: its keys and its open ports (fail closed).
REVOKED = (*KEYS, "tcp_ports", "udp_ports")
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
        self.mount_point = root / "identity-disk"
        self.var = root / "var"
        self.run_dir = root / "run" / "ivm"
        self.identity = self.var / "identity"
        for d in (self.disk, self.mount_point, self.var, self.run_dir.parent):
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

    def args(self, source: Path, device: Path | None = None) -> list[str]:
        return [
            str(source),
            str(self.identity),
            str(self.run_dir),
            str(self.base_hosts),
            str(self.default_resolv),
            *([str(device)] if device else []),
        ]

    def boot(self, expect: int = 0, device: Path | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["bash", str(IMPORT), *self.args(self.disk, device)],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
        )
        assert proc.returncode == expect, proc.stderr
        return proc

    def boot_mounted(self, expect: int = 0, device: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Boots with the disk's files on a tmpfs mounted at the mount point, as the unit mounts the disk.

        The mount lives in a private mount namespace, so nothing outlives the test; the namespace
        reports whether the mount point was still mounted after the script ended.
        """
        mnt = shlex.quote(str(self.mount_point))
        script = (
            f"mount -t tmpfs -o size=1m,mode=0755 ivm-test-identity {mnt} || exit 99\n"
            f"cp -a -- {shlex.quote(str(self.disk))}/. {mnt}/ || exit 99\n"
            f"bash {shlex.quote(str(IMPORT))} {shlex.join(self.args(self.mount_point, device))}\n"
            "rc=$?\n"
            f"if mountpoint -q {mnt}; then echo 'TEST: STILL MOUNTED' >&2; umount {mnt}; fi\n"
            "exit $rc\n"
        )
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
        )
        assert proc.returncode != 99, f"could not mount the test disk: {proc.stderr}"
        assert proc.returncode == expect, proc.stderr
        return proc

    def imported(self) -> dict[str, str]:
        return {p.name: p.read_text() for p in sorted(self.identity.iterdir())}

    def status(self) -> str:
        return (self.run_dir / "identity-status").read_text()

    def accepted(self) -> bool:
        """The marker the guest agent's unit requires: only an imported or absent identity sets it."""
        return (self.run_dir / "identity-accepted").is_file()


def block_device(tmp_path: Path) -> Path:
    """An attached identity disk's device node (a loop device's numbers; nothing opens it)."""
    if os.geteuid() != 0:
        pytest.skip("making a block device node needs root")
    device = tmp_path / "virtio-identity"
    os.mknod(device, stat.S_IFBLK | 0o600, os.makedev(7, 255))
    return device


@pytest.fixture
def guest(tmp_path: Path, env: Mapping[str, str]) -> Guest:
    return Guest(tmp_path, env)


@pytest.fixture(scope="module")
def host_cert(host_key: tuple[bytes, bytes], tmp_path_factory: pytest.TempPathFactory) -> str:
    keys = Keys(host_key[0].decode(), host_key[1].decode())
    return with_certificates(keys, tmp_path_factory.mktemp("ca")).certs["cert"] + "\n"


@pytest.fixture
def identity(host_key: tuple[bytes, bytes], host_cert: str) -> dict[str, bytes | str]:
    private, public = host_key
    return {
        "machine-id": "0123456789abcdef0123456789abcdef\n",
        "hostname": "web1\n",
        "ssh_host_ed25519_key": private,
        "ssh_host_ed25519_key.pub": public,
        "ssh_host_ed25519_key-cert.pub": host_cert,
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
    assert "imported 11 files" in proc.stderr
    assert guest.status() == "imported\n" and guest.accepted()


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
        ("ssh_host_ed25519_key.pub", "ssh-rsa AAAAB3Nza x\n", "not valid base64"),
        ("tcp_ports", "80\n70000\n", "tcp_ports line '70000'"),
        ("udp_ports", "0\n", "udp_ports line '0'"),
        ("tcp_ports", "80 443\n", "tcp_ports line '80 443'"),
        ("hosts", "db.example.org 192.0.2.1\n", "is not an IP address"),
        ("hosts", "192.0.2.1\n", "needs at least one host name"),
        ("resolv.conf", "nameserver dns.example.org\n", "is not an IP address"),
        ("resolv.conf", "rm -rf /\n", "unknown keyword 'rm'"),
        ("admin_authorized_keys", "hello world\n", "is not a public key line"),
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
    assert "identity disk REFUSED" in proc.stderr
    assert reason in proc.stderr
    # Fail closed: the refused disk may have revoked keys, so the old ones stop working too.
    assert guest.imported() == {k: v for k, v in before.items() if k not in REVOKED}
    assert guest.status().startswith("refused: ") and reason in guest.status()
    assert not guest.accepted()


def test_a_missing_required_file_keeps_the_previous_identity(
    guest: Guest, identity: dict[str, bytes | str]
) -> None:
    guest.write(identity)
    guest.boot()
    (guest.disk / "ssh_host_ed25519_key").unlink()
    proc = guest.boot()
    assert "ssh_host_ed25519_key is missing" in proc.stderr
    assert set(guest.imported()) == set(identity) - set(REVOKED)


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


def test_an_attached_disk_that_did_not_mount_revokes_the_keys(
    guest: Guest, identity: dict[str, bytes | str], tmp_path: Path
) -> None:
    """A corrupt disk fails to mount, so the unit's mount step leaves the mount point empty: that is
    a refusal (keys revoked), not a missing disk (keys kept)."""
    device = block_device(tmp_path)
    guest.write(identity)
    guest.boot()
    before = guest.imported()
    guest.clear_disk()
    proc = guest.boot(device=device)
    assert "could not be mounted" in proc.stderr
    assert guest.imported() == {k: v for k, v in before.items() if k not in REVOKED}
    assert guest.status().startswith("refused: the identity disk")
    assert not guest.accepted()
    assert (guest.run_dir / "hosts").exists()


def test_no_attached_disk_keeps_the_keys(
    guest: Guest, identity: dict[str, bytes | str], tmp_path: Path
) -> None:
    guest.write(identity)
    guest.boot()
    guest.clear_disk()
    proc = guest.boot(device=tmp_path / "no-such-device")
    assert "no identity disk" in proc.stderr
    assert set(guest.imported()) == set(identity)
    assert guest.status() == "absent\n" and guest.accepted()


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


@pytest.mark.parametrize("case", load("identity"), ids=case_id)
def test_identity_case_in_the_guest(
    guest: Guest,
    identity: dict[str, bytes | str],
    host_key: tuple[bytes, bytes],
    case: dict[str, Any],
    tmp_path: Path,
) -> None:
    """The shared table's verdict for the guest (tests/cases/identity.json), in a valid identity."""
    keys = with_certificates(Keys(host_key[0].decode(), host_key[1].decode()), tmp_path)
    guest.write({**identity, case["file"]: keys.fill(case["text"])})
    guest.boot()
    verdict = "accept" if guest.status() == "imported\n" else "refuse"
    assert verdict == case["guest"], f"{case['why']}: {guest.status()}"


def test_a_long_option_in_authorized_keys_is_read_whole(
    guest: Guest, identity: dict[str, bytes | str], host_key: tuple[bytes, bytes]
) -> None:
    # Near the 64 KiB limit: the options are skipped by one regex, the key after them is checked.
    line = b'command="' + b"x" * 60000 + b'" ' + host_key[1]
    guest.write({**identity, "admin_authorized_keys": line})
    guest.boot()
    assert guest.status() == "imported\n"
    assert guest.imported()["admin_authorized_keys"] == line.decode()


def assert_after_boot(guest: Guest, proc: subprocess.CompletedProcess[str]) -> None:
    """What every path must leave: the disk unmounted and both /etc bind sources in /run/ivm."""
    assert "STILL MOUNTED" not in proc.stderr
    assert (guest.run_dir / "hosts").read_text().startswith(BASE_HOSTS)
    assert (guest.run_dir / "resolv.conf").is_file()


@pytest.fixture
def unshare() -> None:
    if shutil.which("unshare") is None or shutil.which("mountpoint") is None:
        pytest.skip("unshare(1) and mountpoint(1) (util-linux) are needed to mount a test disk")


@pytest.mark.usefixtures("unshare")
def test_a_good_disk_is_unmounted_after_the_import(guest: Guest, identity: dict[str, bytes | str]) -> None:
    guest.write(identity)
    proc = guest.boot_mounted()
    assert_after_boot(guest, proc)
    assert set(guest.imported()) == set(identity)
    assert guest.status() == "imported\n"


@pytest.mark.usefixtures("unshare")
def test_no_identity_disk_keeps_the_previous_identity_and_writes_hosts(
    guest: Guest, identity: dict[str, bytes | str]
) -> None:
    guest.write(identity)
    guest.boot_mounted()
    guest.clear_disk()
    proc = guest.boot_mounted()  # the mount succeeded on a blank file system
    assert_after_boot(guest, proc)
    assert "no identity disk" in proc.stderr
    assert set(guest.imported()) == set(identity)  # no new identity to refuse: the keys stay
    assert guest.status() == "absent\n"


@pytest.mark.usefixtures("unshare")
def test_an_identity_without_resolv_conf_gets_the_default(
    guest: Guest, identity: dict[str, bytes | str]
) -> None:
    guest.write({k: v for k, v in identity.items() if k != "resolv.conf"})
    proc = guest.boot_mounted()
    assert_after_boot(guest, proc)
    assert (guest.run_dir / "resolv.conf").read_text() == DEFAULT_RESOLV
    assert "resolv.conf" not in guest.imported()


@pytest.mark.usefixtures("unshare")
def test_a_broken_file_keeps_the_previous_identity_without_its_keys(
    guest: Guest, identity: dict[str, bytes | str]
) -> None:
    guest.write(identity)
    guest.boot_mounted()
    before = guest.imported()
    guest.write({"hosts": "not-an-address db\n", "admin_authorized_keys": "ssh-ed25519 AAAAC3Nza new\n"})
    proc = guest.boot_mounted()
    assert_after_boot(guest, proc)
    assert "identity disk REFUSED: hosts" in proc.stderr
    kept = guest.imported()
    assert kept == {k: v for k, v in before.items() if k not in REVOKED}
    assert guest.status().startswith("refused: hosts ")
    # The extra hosts lines of the kept identity still reach /etc/hosts.
    assert (guest.run_dir / "hosts").read_text().endswith(str(identity["hosts"]))


@pytest.mark.usefixtures("unshare")
def test_an_attached_disk_that_mounts_empty_is_refused(
    guest: Guest, identity: dict[str, bytes | str], tmp_path: Path
) -> None:
    """ivm never makes an empty identity disk: one attached empty is a refusal, not a missing disk."""
    device = block_device(tmp_path)
    guest.write(identity)
    guest.boot_mounted()
    before = guest.imported()
    guest.clear_disk()
    proc = guest.boot_mounted(device=device)
    assert_after_boot(guest, proc)
    assert "is empty" in proc.stderr
    assert guest.imported() == {k: v for k, v in before.items() if k not in REVOKED}
    assert guest.status().startswith("refused: the identity disk") and not guest.accepted()


@pytest.mark.usefixtures("unshare")
def test_a_failed_write_still_unmounts_and_writes_hosts(
    guest: Guest, identity: dict[str, bytes | str]
) -> None:
    guest.write(identity)
    guest.var.rmdir()
    guest.var.write_text("not a directory")  # the staging directory cannot be made
    proc = guest.boot_mounted(expect=1)
    assert_after_boot(guest, proc)
    assert "failed to write" in proc.stderr
    assert guest.status().startswith("failed: ")
    assert not guest.accepted()


def test_a_missing_default_resolv_conf_does_not_cost_the_hosts_file(guest: Guest) -> None:
    guest.default_resolv.unlink()
    guest.boot(expect=1)
    assert (guest.run_dir / "hosts").read_text() == BASE_HOSTS
    assert guest.status() == "absent\n"


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
