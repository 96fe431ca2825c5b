"""The guest's own boot logic under real systemd, on the real daemon, reached with `ivm ssh`.

The systemd stand-in (tests/lab/standin_systemd) boots the ivm guest's initrd units, fstab
and identity import as NixOS evaluates them, with Debian's systemd, kernel and sshd. One VM, made by
`ivm create/define/start`, serves every claim; it boots five times: first boot, `ivm upgrade`, then
with its identity disk detached, with a broken file on it, and `ivm upgrade` again.
Its NIC is QEMU's user-mode one with restrict=on: the guest has no route out, and SSH reaches it
through a forward bound to 127.0.0.1.
"""

from __future__ import annotations

import secrets
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from ivm.hypervisor import agent
from tests.integration.conftest import Fleet, teardown_fleet, vm_name
from tests.lab.console import ConsoleCapture
from tests.lab.pool import scratch_pool_dir
from tests.lab.standin.kernel import StandinError
from tests.lab.standin_systemd import build_systemd_standin
from tests.lab.standin_systemd.golden import load as load_golden

# Setup boots the guest under TCG (minutes on a loaded 2-core machine), inside the first test's time.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

SSH_TIMEOUT = 1200.0  # a TCG boot of this guest takes minutes on a loaded 2-core machine
IDENTITY_MODES = {
    "machine-id": "644",
    "hostname": "644",
    "ssh_host_ed25519_key": "600",
    "ssh_host_ed25519_key.pub": "644",
    "admin_authorized_keys": "644",
    "user_authorized_keys": "644",
    "tcp_ports": "644",
    "hosts": "644",
}


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Guest:
    fleet: Fleet
    name: str
    agent_socket: Path
    machine_dir: Path
    image: Path

    def ssh(self, *command: str, user: str = "admin", check: bool = True) -> subprocess.CompletedProcess[str]:
        """`ivm ssh NAME -l USER -- COMMAND` with the test's client key."""
        # ssh hands the remote shell one line: quote each word, so spaces and > stay arguments.
        argv = [*self.fleet.argv("ssh", self.name, "-l", user, "--"), shlex.join(command)]
        env = {**self.fleet.env(), "SSH_AUTH_SOCK": str(self.agent_socket), "XDG_CACHE_HOME": str(self.cache)}
        try:
            r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
        except subprocess.TimeoutExpired:
            r = subprocess.CompletedProcess(argv, 124, "", "ssh timed out")
        if check and r.returncode != 0:
            pytest.fail(f"ivm ssh {self.name} -- {' '.join(command)} exited {r.returncode}:\n{r.stderr}")
        return r

    def wait_ssh(self) -> None:
        deadline = time.monotonic() + SSH_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            r = self.ssh("true", check=False)
            if r.returncode == 0:
                return
            last = r.stderr.strip()
            time.sleep(5)
        pytest.fail(f"no SSH to {self.name} within {SSH_TIMEOUT:.0f} s: {last}")

    @property
    def cache(self) -> Path:
        return self.agent_socket.parent / "cache"

    def identity(self, name: str) -> str:
        return (self.machine_dir / name).read_text()


@pytest.fixture(scope="module")
def guest(system_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    tmp = tmp_path_factory.mktemp("systemd-guest")
    try:
        build_systemd_standin(tmp / "standin.raw")
    except StandinError as e:
        pytest.skip(f"the systemd stand-in cannot be built here: {e}")
    # The admin key pair is the test's own, offered by an agent of its own (ivm ssh takes no -i).
    keys = tmp / "keys"
    keys.mkdir(mode=0o700)
    key = keys / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ivm-test", "-f", str(key)], check=True
    )
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(keys / "agent")], stdout=subprocess.DEVNULL)
    try:
        _wait_for(keys / "agent")
        subprocess.run(["ssh-add", "-q", str(key)], env={"SSH_AUTH_SOCK": str(keys / "agent")}, check=True)
        yield from _guest(system_uri, tmp, keys / "agent", key)
    finally:
        agent.terminate()
        agent.wait(10)


def _wait_for(path: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"ssh-agent made no socket at {path}")
        time.sleep(0.05)


def _guest(system_uri: str, tmp: Path, agent_socket: Path, key: Path) -> Iterator[Guest]:
    image = tmp / "standin.raw"
    root = tmp / "project"
    (root / "machines").mkdir(parents=True)
    (root / "flake.nix").write_text("{ outputs = _: { }; }\n")
    machines = tmp / "machines.json"
    machines.write_text('{"version": 1, "machines": {}}')
    with scratch_pool_dir() as pool_dir:
        fleet = Fleet(system_uri, root, machines, f"ivm-test-{secrets.token_hex(4)}", pool_dir / "pool")
        try:
            name = fleet.add(
                vm_name("sd"),
                memory_mib=1024,
                network={"type": "user", "forwards": [{"host": _free_loopback_port(), "guest": 22}]},
            )
            mdir = root / "machines" / name
            mdir.mkdir()
            pub = key.with_suffix(".pub").read_text()
            (mdir / "admin_authorized_keys").write_text(pub)
            (mdir / "user_authorized_keys").write_text(pub)
            (mdir / "tcp_ports").write_text("8080\n")
            (mdir / "hosts").write_text("192.0.2.10 first-extra\n")
            fleet.ivm("create", name, "--image", str(image), timeout=900)
            fleet.ivm("define", name)
            fleet.ivm("start", name)
            g = Guest(fleet, name, agent_socket, mdir, image)
            g.wait_ssh()
            yield g
        finally:
            teardown_fleet(fleet)


def test_first_boot_runs_with_the_identity(guest: Guest) -> None:
    machine_id = guest.identity("machine-id").strip()
    assert guest.ssh("cat", "/etc/machine-id").stdout.strip() == machine_id
    assert guest.ssh("hostname").stdout.strip() == guest.identity("hostname").strip()
    # journald named its directory by the ID it read at start: the bind was there before it.
    assert guest.ssh("ls", "/var/log/journal").stdout.split() == [machine_id]
    binds = guest.ssh("findmnt", "-rno", "TARGET,OPTIONS", "--target", "/etc/machine-id").stdout
    assert binds.startswith("/etc/machine-id ") and "ro" in binds.split()[1].split(",")


def test_root_and_etc_refuse_writes_and_var_is_the_var_disk(guest: Guest) -> None:
    for path in ("/probe", "/etc/probe", "/usr/probe"):
        r = guest.ssh("sudo", "touch", path, check=False)
        assert r.returncode != 0 and "Read-only file system" in r.stderr, (path, r.stderr)
    assert guest.ssh("findmnt", "-no", "FSTYPE", "/").stdout.strip() == "erofs"
    var = guest.ssh("findmnt", "-no", "SOURCE,FSTYPE", "/var").stdout.split()
    assert var[1] == "ext4"
    serial = guest.ssh("udevadm", "info", "-q", "property", "--property=ID_SERIAL", var[0]).stdout
    assert "var" in serial
    home = guest.ssh("findmnt", "-no", "SOURCE", "/home").stdout.strip()
    assert home == f"{var[0]}[/home]"
    guest.ssh("sudo", "sh", "-c", "echo kept > /var/probe")


def test_identity_is_imported_with_its_modes(guest: Guest) -> None:
    out = guest.ssh(
        "sudo", "stat", "-c", "%n %a %U:%G", *(f"/var/identity/{n}" for n in IDENTITY_MODES)
    ).stdout
    seen = {Path(line.split()[0]).name: line.split()[1:] for line in out.splitlines()}
    assert seen == {n: [mode, "root:root"] for n, mode in IDENTITY_MODES.items()}
    assert guest.ssh("getent", "hosts", "first-extra").stdout.split()[0] == "192.0.2.10"
    assert guest.ssh("grep", "-c", "nameserver", "/etc/resolv.conf").stdout.strip() != "0"


def test_ssh_pins_the_host_key_and_refuses_passwords(guest: Guest) -> None:
    assert guest.ssh("id", "-un", user="user").stdout.strip() == "user"
    password = subprocess.run(
        ["ssh", "-F", "/dev/null", "-p", str(_forward_port(guest)), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "PreferredAuthentications=password,keyboard-interactive", "-l", "admin", "127.0.0.1", "true"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # The server offers public keys only: no password or keyboard-interactive method to try.
    assert password.returncode == 255 and "Permission denied (publickey)" in password.stderr
    # Another key pair in the project: ivm ssh pins its public half, the guest answers with the real one.
    key = guest.machine_dir / "ssh_host_ed25519_key"
    saved = {p: p.read_bytes() for p in (key, key.with_suffix(".pub"))}
    other = guest.machine_dir.parent / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    try:
        shutil.copyfile(other, key)
        shutil.copyfile(other.with_suffix(".pub"), key.with_suffix(".pub"))
        r = guest.ssh("true", check=False)
        assert r.returncode == 255 and "Host key verification failed" in r.stderr, r.stderr
    finally:
        for path, data in saved.items():
            path.write_bytes(data)
    guest.ssh("true")


def _forward_port(guest: Guest) -> int:
    import json

    doc = json.loads(guest.fleet.machines_file.read_text())
    return int(doc["machines"][guest.name]["network"]["forwards"][0]["host"])


def test_upgrade_applies_identity_changes_and_keeps_var(guest: Guest) -> None:
    created = guest.ssh("sudo", "tune2fs", "-l", _var_device(guest)).stdout
    (guest.machine_dir / "tcp_ports").write_text("8080\n9090\n")
    (guest.machine_dir / "hosts").write_text("192.0.2.10 first-extra\n192.0.2.11 second-extra\n")
    guest.fleet.ivm(
        "upgrade", guest.name, "--image", str(guest.image), "--force", "--timeout", "120", timeout=900
    )
    guest.wait_ssh()
    assert guest.ssh("cat", "/var/identity/tcp_ports").stdout.split() == ["8080", "9090"]
    assert guest.ssh("getent", "hosts", "second-extra").stdout.split()[0] == "192.0.2.11"
    assert guest.ssh("cat", "/var/probe").stdout.strip() == "kept"
    # Not formatted again: the file system's creation time is the first boot's.
    after = guest.ssh("sudo", "tune2fs", "-l", _var_device(guest)).stdout
    assert _created(after) == _created(created)
    boots = guest.ssh("sudo", "journalctl", "--list-boots", "--no-pager", "-q").stdout.strip().splitlines()
    assert len(boots) == 2, boots
    assert guest.ssh("cat", "/etc/machine-id").stdout.strip() == guest.identity("machine-id").strip()


def _var_device(guest: Guest) -> str:
    return guest.ssh("findmnt", "-no", "SOURCE", "/var").stdout.strip()


def _created(tune2fs: str) -> str:
    return next(line for line in tune2fs.splitlines() if line.startswith("Filesystem created:"))


# --- the identity disk detached, then broken: the failure paths of the import, under real systemd --


def _stop(guest: Guest) -> None:
    # Graceful only (the guest must honour it, through its agent), so the journal reaches the var
    # disk; a loaded TCG host may need minutes.
    guest.fleet.ivm("stop", guest.name, "--timeout", "600", timeout=900)


def _agent_answers(guest: Guest) -> bool:
    conn = guest.fleet.conn()
    try:
        return agent.ping(conn.lookupByName(guest.name))
    finally:
        conn.close()


def _host_key_served(guest: Guest) -> str:
    """The host key sshd serves through the forward, once it serves one (no login involved)."""
    deadline = time.monotonic() + SSH_TIMEOUT
    while time.monotonic() < deadline:
        r = subprocess.run(
            ["ssh-keyscan", "-T", "10", "-t", "ed25519", "-p", str(_forward_port(guest)), "127.0.0.1"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        keys = [line.split()[1:3] for line in r.stdout.splitlines() if not line.startswith("#")]
        if keys:
            return " ".join(keys[0])
        time.sleep(5)
    pytest.fail(f"{guest.name} served no host key within {SSH_TIMEOUT:.0f} s")


def test_a_detached_identity_disk_keeps_the_identity(guest: Guest) -> None:
    """Claim 3, first failure path: no identity disk at all is not a refusal; everything stays."""
    _stop(guest)
    conn = guest.fleet.conn()
    try:
        dom = conn.lookupByName(guest.name)
        disk = next(d for d in _disks(dom.XMLDesc(0)) if "<serial>identity</serial>" in d)
        dom.detachDeviceFlags(disk, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    finally:
        conn.close()
    guest.fleet.ivm("start", guest.name)
    guest.wait_ssh()
    assert guest.ssh("cat", "/run/ivm/identity-status").stdout == "absent\n"
    assert guest.ssh("cat", "/etc/machine-id").stdout.strip() == guest.identity("machine-id").strip()
    assert guest.ssh("hostname").stdout.strip() == guest.identity("hostname").strip()
    assert guest.ssh("cat", "/var/identity/tcp_ports").stdout.split() == ["8080", "9090"]
    # The kept identity's hosts lines still resolve, and resolv.conf is the default (it has none).
    assert guest.ssh("getent", "hosts", "second-extra").stdout.split()[0] == "192.0.2.11"
    assert guest.ssh("cat", "/etc/resolv.conf").stdout == load_golden().default_resolv_conf
    assert guest.ssh("findmnt", "-rno", "TARGET", check=False).stdout.count("identity-disk") == 0
    assert _agent_answers(guest)


def test_a_broken_identity_file_is_refused_and_the_agent_stays_silent(guest: Guest) -> None:
    """Claim 3, second failure path (the guest's rules refuse what the host wrote): the previous
    machine-id and host key stay, its keys and ports go, the disk is unmounted, and the agent (the
    host's health signal) does not start."""
    _stop(guest)
    guest.fleet.ivm("define", guest.name)  # attaches the identity disk again
    served_before = guest.identity("ssh_host_ed25519_key.pub").split()[:2]
    volume = guest.fleet.volume_path(f"{guest.name}-identity.img")
    bad = guest.machine_dir.parent / "bad-tcp-ports"
    bad.write_text("8080\nnot-a-port\n")
    # In place, so the disk stays the one ivm made (same superblock): only the file breaks a rule.
    for request in ("rm tcp_ports", f"write {bad} tcp_ports"):
        subprocess.run(["debugfs", "-w", "-R", request, str(volume)], capture_output=True, check=True)
    guest.fleet.ivm("start", guest.name)
    with ConsoleCapture(guest.fleet.uri, guest.name) as console:
        assert _host_key_served(guest) == " ".join(served_before)
        seen = "\n".join(console.lines)
    assert "ivm-identity: identity disk REFUSED: tcp_ports" in seen, seen[-3000:]
    r = guest.ssh("true", check=False)
    assert r.returncode == 255 and "Permission denied (publickey)" in r.stderr, r.stderr
    # sshd is up, so the agent would have been started long ago had the identity been accepted.
    assert not _agent_answers(guest)


def test_a_valid_identity_after_a_refusal_restores_access(guest: Guest) -> None:
    """The user fixes the identity (here: one more hosts line) and runs `ivm upgrade`: the disk is
    rebuilt from machines/, the guest accepts it, its agent answers the health gate, and the
    refused boot's journal shows it kept the machine-id."""
    # The disk was broken behind ivm's back, so its recorded digest still matches machines/: without
    # a change there, upgrade rightly finds the VM up to date.
    hosts = guest.machine_dir / "hosts"
    hosts.write_text(hosts.read_text() + "192.0.2.12 third-extra\n")
    guest.fleet.ivm(
        "upgrade", guest.name, "--image", str(guest.image), "--force", "--timeout", "600",
        "--health-timeout", str(SSH_TIMEOUT), timeout=int(SSH_TIMEOUT) + 600,
    )  # fmt: skip
    guest.wait_ssh()
    assert guest.ssh("cat", "/run/ivm/identity-status").stdout == "imported\n"
    assert guest.ssh("cat", "/var/identity/tcp_ports").stdout.split() == ["8080", "9090"]
    assert guest.ssh("getent", "hosts", "third-extra").stdout.split()[0] == "192.0.2.12"
    refused_boot = guest.ssh("sudo", "journalctl", "-b", "-1", "-o", "cat", "--no-pager").stdout
    assert "identity disk REFUSED: tcp_ports" in refused_boot, refused_boot
    ids = guest.ssh("sudo", "journalctl", "-b", "-1", "-n", "1", "-o", "export", "--no-pager").stdout
    assert f"_MACHINE_ID={guest.identity('machine-id').strip()}" in ids.splitlines()
    assert _agent_answers(guest)


def _disks(domain_xml: str) -> list[str]:
    from lxml import etree

    return [etree.tostring(d, encoding="unicode") for d in etree.fromstring(domain_xml).iter("disk")]


def test_a_host_certificate_is_served_and_ssh_trusts_only_the_ca(guest: Guest, tmp_path: Path) -> None:
    """The last boot: upgrade signs the host key with a throwaway CA, the identity disk carries the
    certificate, the guest's sshd serves it, and plain ssh logs in trusting nothing but the CA."""
    home = tmp_path / "ca"
    home.mkdir(mode=0o700)
    ca = home / "ivm_host_ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ca)], check=True)
    guest.fleet.ivm(
        "upgrade", guest.name, "--image", str(guest.image), "--force", "--timeout", "120",
        "--host-ca", str(ca), timeout=900,
    )  # fmt: skip
    assert (guest.machine_dir / "ssh_host_ed25519_key-cert.pub").is_file()
    guest.wait_ssh()
    served = guest.ssh("cat", "/var/identity/ssh_host_ed25519_key-cert.pub").stdout
    assert served == guest.identity("ssh_host_ed25519_key-cert.pub")
    config = tmp_path / "ivm.conf"
    guest.fleet.ivm("ssh-config", guest.name, "-o", str(config), "--host-ca", str(ca))
    known = (tmp_path / "ivm.conf.known_hosts").read_text().splitlines()
    ca_pub = " ".join(Path(f"{ca}.pub").read_text().split()[:2])
    assert known == [f"@cert-authority ivm-{guest.name} {ca_pub}"]  # no key of the VM's own
    env = {"SSH_AUTH_SOCK": str(guest.agent_socket), "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", "-v", guest.name, "hostname"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == guest.identity("hostname").strip()
    assert "is known and matches the ED25519-CERT host certificate" in r.stderr, r.stderr
