"""`ivm ssh` against a hostile guest: what the guest agent reports never reaches ssh as an option,
and the user's ssh config cannot forward anything into the VM."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, cast

import libvirt
import pytest

from ivm.hypervisor.domains import Domains, State, addresses, interface_macs, routable_ip, usable_addresses
from ivm.hypervisor.handles import DomainHandle
from ivm.identity.source import generate_missing
from ivm.ops.ssh import HARDENING, ssh_argv
from tests.conftest import Project, RunCli, machine_entry

MAC = "52:54:00:12:34:56"
ATTACK = '-oProxyCommand=sh -c "touch /tmp/ivm-pwned"'
DOMAIN_XML = f"""<domain type='qemu'><name>web1</name><devices>
<interface type='network'><mac address='{MAC.upper()}'/><source network='default'/></interface>
</devices></domain>"""


def iface(addrs: list[str], hwaddr: str = MAC) -> dict[str, Any]:
    return {"hwaddr": hwaddr, "addrs": [{"type": 0, "addr": a, "prefix": 24} for a in addrs]}


def _handle(fake: object) -> DomainHandle:
    return cast(DomainHandle, fake)  # a partial fake of what addresses() calls


class FakeDomain:
    """A running domain whose DHCP lease source fails (bridged NIC) and whose agent says `agent`."""

    def __init__(self, agent: dict[str, Any], lease: dict[str, Any] | None = None, xml: str = DOMAIN_XML):
        self.agent, self.lease, self.xml = agent, lease, xml

    def name(self) -> str:
        return "web1"

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802 -- libvirt's name
        return self.xml

    def interfaceAddresses(self, source: int, flags: int = 0) -> dict[str, Any]:  # noqa: N802
        if source == libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE:
            if self.lease is None:
                raise libvirt.libvirtError("no lease source")
            return self.lease
        return self.agent


@pytest.mark.parametrize(
    "value",
    [
        ATTACK,
        "-oLocalCommand=id",
        "192.0.2.5 -oProxyCommand=id",
        "192.0.2.5\n",
        "192.0.2.5/24",
        "web1.example.org",
        "",
        "127.0.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "169.254.1.1",
        "fe80::1",
        "fe80::1%eth0",
        "2001:db8::1%eth0",
        "224.0.0.1",
        "ff02::1",
        "0.0.0.0",  # noqa: S104 -- a value the guest reports, never bound
        "::",
        "255.255.255.255",
    ],
)
def test_a_guest_reported_value_that_is_not_a_reachable_ip_is_dropped(value: str) -> None:
    assert routable_ip(value) is None
    assert addresses(_handle(FakeDomain({"eth0": iface([value])}))) == []


@pytest.mark.parametrize(
    ("value", "canonical"), [("192.0.2.5", "192.0.2.5"), ("2001:DB8::0:5", "2001:db8::5")]
)
def test_a_real_address_is_kept_in_canonical_form(value: str, canonical: str) -> None:
    assert addresses(_handle(FakeDomain({"eth0": iface([value])}))) == [canonical]


def test_only_the_domains_own_nic_counts() -> None:
    agent = {
        "lo": iface(["127.0.0.1"], "00:00:00:00:00:00"),
        "eth0": iface([ATTACK, "192.0.2.5"]),
        "evil": iface(["198.51.100.7"], "52:54:00:66:66:66"),
        "nomac": {"addrs": [{"addr": "198.51.100.8"}]},
    }
    assert addresses(_handle(FakeDomain(agent))) == ["192.0.2.5"]
    assert interface_macs(DOMAIN_XML) == {MAC}


def test_leases_come_before_the_agent() -> None:
    dom = FakeDomain({"eth0": iface(["192.0.2.9"])}, lease={"vnet0": iface(["192.0.2.5"])})
    assert addresses(_handle(dom)) == ["192.0.2.5"]


def test_malformed_agent_answers_are_ignored() -> None:
    assert (
        usable_addresses(
            {"eth0": "x", "eth1": {"hwaddr": 5}, "eth2": {"hwaddr": MAC, "addrs": ["x"]}}, frozenset({MAC})
        )
        == []
    )


def test_ssh_argv_ends_options_before_the_address() -> None:
    argv = ssh_argv("ivm-web1", "192.0.2.5", "admin", Path("/k"), ["uptime", "-v"])
    assert argv[-4:] == ["--", "192.0.2.5", "uptime", "-v"]
    options = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    for option in ("ForwardAgent=no", "ForwardX11=no", "ProxyCommand=none", "PermitLocalCommand=no"):
        assert option in options
    assert set(HARDENING) <= set(options)


def ssh_dry_run(argv: list[str], user_config: Path) -> subprocess.CompletedProcess[str]:
    """What ssh would do with argv: `ssh -G` parses options and config, connects and resolves nothing."""
    return subprocess.run([argv[0], "-G", "-F", str(user_config), *argv[1:]], capture_output=True, text=True)


def ssh_config(argv: list[str], user_config: Path) -> dict[str, str]:
    out = ssh_dry_run(argv, user_config)
    assert out.returncode == 0, out.stderr
    return dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)


@pytest.fixture
def hostile_user_config(tmp_path: Path) -> Path:
    """A ~/.ssh/config a user may well have: it forwards the agent, X11 and a port everywhere."""
    path = tmp_path / "config"
    path.write_text(
        "Host *\n  ForwardAgent yes\n  ForwardX11 yes\n  LocalForward 8080 localhost:80\n"
        "  ControlMaster auto\n  ControlPath /tmp/cm-%C\n  PermitLocalCommand yes\n  LocalCommand id\n"
    )
    return path


needs_ssh = pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client")


@needs_ssh
def test_ssh_never_reads_a_hostile_address_as_an_option(hostile_user_config: Path, tmp_path: Path) -> None:
    # The argv before the fix (address before `--`) made ssh run the guest's ProxyCommand, with
    # "uptime" as the host name: ssh -G showed `proxycommand sh -c "touch /tmp/ivm-pwned"`.
    out = ssh_dry_run(ssh_argv("ivm-web1", ATTACK, "admin", tmp_path / "k", ["uptime"]), hostile_user_config)
    assert "touch /tmp/ivm-pwned" not in out.stdout
    if out.returncode == 0:  # an older ssh takes it as a host name that never resolves
        assert out.stdout.splitlines()[0].startswith("host -oproxycommand"), out.stdout
    else:
        assert "hostname contains invalid characters" in out.stderr, out.stderr


@needs_ssh
def test_ssh_overrides_what_the_users_config_would_forward(hostile_user_config: Path, tmp_path: Path) -> None:
    config = ssh_config(ssh_argv("ivm-web1", "192.0.2.5", "admin", tmp_path / "k k", []), hostile_user_config)
    assert config["hostname"] == "192.0.2.5"
    assert config["forwardagent"] == "no"
    assert config["forwardx11"] == "no"
    assert config["clearallforwardings"] == "yes"
    assert config["controlmaster"] == "false"
    assert config.get("controlpath", "none") == "none"
    assert config["permitlocalcommand"] == "no"
    assert config["stricthostkeychecking"] == "true"
    assert config["userknownhostsfile"] == str(tmp_path / "k k")


@pytest.fixture
def ssh_world(project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """`ivm ssh web1` up to the exec of ssh, with the domain replaced by a FakeDomain."""
    generate_missing(project.machine_dir("web1"), "web1")
    # root's runtime directory is RUN_ROOT/ivm, anyone else's $XDG_RUNTIME_DIR/ivm: the same here
    world: dict[str, Any] = {"dom": None, "exec": None, "rundir": tmp_path / "run" / "ivm"}
    monkeypatch.setattr(Domains, "lookup", lambda self, name: world["dom"])
    monkeypatch.setattr(Domains, "state", lambda self, dom: State.RUNNING)
    monkeypatch.setattr("ivm.cli.fleet.os.execv", lambda path, argv: world.update(exec=argv))
    monkeypatch.setattr("ivm.runtime_dir.RUN_ROOT", tmp_path / "run")  # root's known_hosts go here
    monkeypatch.setattr("ivm.runtime_dir.TMP_ROOT", tmp_path / "tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)
    return world


def test_ivm_ssh_refuses_a_guest_that_reports_an_option_as_its_address(
    run_cli: RunCli, ssh_world: dict[str, Any]
) -> None:
    ssh_world["dom"] = FakeDomain({"eth0": iface([ATTACK])})
    r = run_cli("ssh", "web1")
    assert r.exit_code == 1, r.output
    assert "no IP address known for web1" in r.output
    assert ssh_world["exec"] is None


def test_ivm_ssh_passes_the_address_after_the_options(run_cli: RunCli, ssh_world: dict[str, Any]) -> None:
    ssh_world["dom"] = FakeDomain({"eth0": iface([ATTACK, "192.0.2.5"])})
    r = run_cli("ssh", "web1", "--", "uptime")
    assert r.exit_code == 0, r.output
    argv = ssh_world["exec"]
    assert argv[-3:] == ["--", "192.0.2.5", "uptime"]
    known_hosts = next(a.split("=", 1)[1].strip('"') for a in argv if a.startswith("UserKnownHostsFile="))
    assert Path(known_hosts).parent == ssh_world["rundir"]
    assert Path(known_hosts).read_text().startswith("ivm-web1 ssh-ed25519 ")
    assert not any(ATTACK in a for a in argv)


def test_ivm_ssh_on_a_machine_without_network_says_so(
    run_cli: RunCli, project: Project, ssh_world: dict[str, Any]
) -> None:
    project.write_machines({"web1": machine_entry(network={"type": "none"})})
    ssh_world["dom"] = FakeDomain({})
    r = run_cli("ssh", "web1")
    assert r.exit_code == 1, r.output
    assert "web1 has no network" in r.output and "wait for the guest" not in r.output
    assert "ivm console web1" in r.output


def test_addresses_of_a_test_driver_domain(test_driver: Any) -> None:
    # libvirt's own answer and XML (not a fake): its demo domain's NIC and the address it leases.
    dom = test_driver.lookupByName("test")
    assert interface_macs(dom.XMLDesc(0)) == {"aa:bb:cc:dd:ee:ff"}
    assert addresses(dom) == ["192.168.122.3"]
