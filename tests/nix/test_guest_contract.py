"""The guest contract (read-only `/` and `/etc`, `/var`, `/home`, journal, identity binds), read
from evaluated NixOS option values of every machine.

Evaluation proves the configuration says what the design says; the boot tests in checks/ prove the
guest does it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.nix.nixeval import REPO, nix_eval

pytestmark = pytest.mark.nix

MACHINES = ("default", "web1", "web2")

# One evaluation for all facts: the option values each assertion below reads.
FACTS = """
cs: builtins.mapAttrs (name: c: let
  cfg = c.config;
  fs = builtins.mapAttrs (_: v: {
    inherit (v) device fsType options neededForBoot autoFormat;
  }) cfg.fileSystems;
  etc = n: let e = cfg.environment.etc.${n}; in { inherit (e) mode enable; text = e.text or null; };
  unit = u: { inherit (u) before after wantedBy requiredBy unitConfig serviceConfig; };
  user = u: {
    inherit (u) isNormalUser extraGroups hashedPassword password initialPassword
      initialHashedPassword hashedPasswordFile;
  };
in {
  inherit fs;
  etcOverlay = { inherit (cfg.system.etc.overlay) enable mutable; };
  etc = builtins.listToAttrs (map (n: { name = n; value = etc n; })
    [ "machine-id" "hostname" "resolv.conf" "hosts" ]);
  hostName = cfg.networking.hostName;
  initrdSystemd = cfg.boot.initrd.systemd.enable;
  initrdImport = unit cfg.boot.initrd.systemd.services.ivm-identity;
  initrdVarLayout = unit cfg.boot.initrd.systemd.services.ivm-var-layout;
  sshd = {
    inherit (cfg.services.openssh) enable hostKeys authorizedKeysFiles generateHostKeys
      authorizedKeysInHomedir;
    inherit (cfg.services.openssh.settings) PasswordAuthentication KbdInteractiveAuthentication
      PermitRootLogin;
    condition = cfg.systemd.services.sshd.unitConfig.ConditionPathExists;
  };
  users = { admin = user cfg.users.users.admin; user = user cfg.users.users.user; };
  mutableUsers = cfg.users.mutableUsers;
  userborn = cfg.services.userborn.enable;
  journald = cfg.services.journald.storage;
  nixGc = cfg.nix.gc.automatic;
  nixEnable = cfg.nix.enable;
  tmpfs = cfg.boot.tmp.useTmpfs;
  firewall = {
    inherit (cfg.networking.firewall) enable extraInputRules;
    nftables = cfg.networking.nftables.enable;
    table = cfg.networking.nftables.tables.nixos-fw.content;
    ports = unit cfg.systemd.services.ivm-firewall-ports;
  };
  kernelParams = cfg.boot.kernelParams;
  imageOutPath = cfg.system.build.ivmImage.outPath;
  # What the initrd may read from /sysroot/nix/store, and what it can: the rendered units, the
  # paths copied into the initrd, and the roots of the system closure on the root image.
  initrdUnits = builtins.mapAttrs (_: u: u.text or "") cfg.boot.initrd.systemd.units;
  initrdStorePaths = map (p: toString p.source) cfg.boot.initrd.systemd.storePaths;
  closureRoots = [ cfg.system.build.toplevel.outPath ]
    ++ map toString cfg.system.extraDependencies
    ++ map (e: toString e.source) (builtins.filter (e: e.enable) (builtins.attrValues cfg.environment.etc));
  machineIdOwn = map (d: d.value.machine-id) (builtins.filter
    (d: builtins.match ".*/modules/identity-binds.nix" d.file != null)
    c.options.environment.etc.definitionsWithLocations);
  # A nixpkgs that sets its own placeholder with mkDefault (newer than 26.05) must not win.
  machineIdUnderOtherDefault = let
    lib = c.pkgs.lib;
    other = c.extendModules { modules = [ {
      environment.etc.machine-id = lib.mkDefault { text = "uninitialized\n"; mode = "0644"; };
    } ]; };
  in { inherit (other.config.environment.etc.machine-id) text mode; };
  guestAgent = {
    enable = cfg.services.qemuGuest.enable;
    execStart = cfg.systemd.services.qemu-guest-agent.serviceConfig.ExecStart;
    condition = cfg.systemd.services.qemu-guest-agent.unitConfig.ConditionPathExists or null;
    identityRuntime = cfg.ivm.identity.runtimeDirectory;
    withHealthCheck = let
      forced = { ivm.guestAgent.healthCheck = c.pkgs.lib.mkForce true; };
      agentUnit = (c.extendModules { modules = [ forced ]; }).config.systemd.services.qemu-guest-agent;
    in agentUnit.serviceConfig.ExecStart;
  };
  webServer = cfg.services.static-web-server.enable;
}) cs
"""


@pytest.fixture(scope="module")
def facts() -> Mapping[str, Any]:
    evaluated: Mapping[str, Any] = nix_eval("nixosConfigurations", apply=FACTS)
    return evaluated


@pytest.fixture(params=MACHINES)
def guest(request: pytest.FixtureRequest, facts: Mapping[str, Any]) -> Mapping[str, Any]:
    machine: Mapping[str, Any] = facts[request.param]
    return machine


def test_every_machine_folder_is_a_configuration(facts: Mapping[str, Any]) -> None:
    folders = {p.name for p in (REPO / "machines").iterdir() if p.is_dir()}
    assert set(facts) == folders >= set(MACHINES)


def test_root_is_read_only_erofs(guest: Mapping[str, Any]) -> None:
    root = guest["fs"]["/"]
    assert root["fsType"] == "erofs"
    assert "ro" in root["options"]
    assert root["device"] == "/dev/disk/by-partlabel/ivm-root"


def test_var_is_the_var_disk_formatted_on_first_boot(guest: Mapping[str, Any]) -> None:
    var = guest["fs"]["/var"]
    assert var["device"] == "/dev/disk/by-id/virtio-var"
    assert var["fsType"] == "ext4"
    assert var["autoFormat"] is True
    assert "x-systemd.makefs" in var["options"]
    assert var["neededForBoot"] is True


def test_home_is_a_bind_of_var_home(guest: Mapping[str, Any]) -> None:
    home = guest["fs"]["/home"]
    assert home["device"] == "/var/home"
    assert "bind" in home["options"]
    # The initrd creates /var/home on a blank disk before the bind.
    assert "x-systemd.after=ivm-var-layout.service" in home["options"]
    assert "initrd-fs.target" in guest["initrdVarLayout"]["before"]


def test_tmp_is_tmpfs(guest: Mapping[str, Any]) -> None:
    assert guest["tmpfs"] is True


def test_etc_is_an_immutable_overlay_with_userborn(guest: Mapping[str, Any]) -> None:
    assert guest["etcOverlay"] == {"enable": True, "mutable": False}
    assert guest["initrdSystemd"] is True
    assert guest["userborn"] is True
    assert guest["mutableUsers"] is False


@pytest.mark.parametrize(
    ("target", "source"),
    [
        ("/etc/machine-id", "/var/identity/machine-id"),
        ("/etc/hostname", "/var/identity/hostname"),
        ("/etc/resolv.conf", "/run/ivm/resolv.conf"),
        ("/etc/hosts", "/run/ivm/hosts"),
    ],
)
def test_placeholders_are_bound_over_from_identity_in_the_initrd(
    guest: Mapping[str, Any], target: str, source: str
) -> None:
    placeholder = guest["etc"][target.removeprefix("/etc/")]
    assert placeholder["enable"] is True
    # A regular file in the overlay (a symlink mode would make the bind land in the store).
    assert placeholder["mode"] in {"0444", "0644"}
    bind = guest["fs"][target]
    assert bind["device"] == source
    assert {"bind", "ro", "nofail", "x-initrd.mount"} <= set(bind["options"])
    assert "x-systemd.after=ivm-identity.service" in bind["options"]
    assert bind["neededForBoot"] is True


BINDS = ("/etc/machine-id", "/etc/hostname", "/etc/resolv.conf", "/etc/hosts")


@pytest.mark.parametrize("target", BINDS)
def test_binds_come_before_switch_root_despite_nofail(guest: Mapping[str, Any], target: str) -> None:
    # nofail drops the generator's Before=initrd-fs.target; only this option puts it back.
    assert "x-systemd.before=initrd-fs.target" in guest["fs"][target]["options"]


@pytest.mark.parametrize("target", BINDS)
def test_binds_are_ordered_after_whatever_mounts_the_etc_overlay(
    guest: Mapping[str, Any], target: str
) -> None:
    units = guest["initrdUnits"]
    after = [o.removeprefix("x-systemd.after=") for o in guest["fs"][target]["options"]]
    mounters = [
        u
        for u in after
        if u in units and ("Where=/sysroot/etc\n" in units[u] or u == "initrd-etc-overlay.service")
    ]
    assert mounters, f"{target} is not ordered after the unit that mounts /sysroot/etc: {after}"


SYSROOT_STORE = re.compile(r"/sysroot(/nix/store/[0-9a-z]{32}-[^\s\"';:,]+)")
STORE = re.compile(r"(?<!/sysroot)(/nix/store/[0-9a-z]{32}-[^\s\"';:,/]+)")


def test_every_store_path_the_initrd_reads_from_the_root_is_in_the_system_closure(
    guest: Mapping[str, Any],
) -> None:
    # make-initrd-ng drops references, and the root image holds only the system's closure.
    read = {m for text in guest["initrdUnits"].values() for m in SYSROOT_STORE.findall(text)}
    roots = guest["closureRoots"]
    missing = sorted(p for p in read if not any(p == r or p.startswith(r + "/") for r in roots))
    assert not missing, f"read from /sysroot but not in the system closure: {missing}"


def test_every_store_path_the_identity_import_names_is_in_the_initrd(guest: Mapping[str, Any]) -> None:
    # The commands it runs (Environment= holds nixpkgs' locale and tz paths, unused in the initrd).
    lines = guest["initrdUnits"]["ivm-identity.service"].splitlines()
    named = {m for line in lines if line.startswith("Exec") for m in STORE.findall(line)}
    copied = guest["initrdStorePaths"]
    missing = sorted(p for p in named if not any(c == p or c.startswith(p + "/") for c in copied))
    assert named and not missing, f"not copied into the initrd: {missing}"


def test_the_identity_disk_is_unmounted_even_when_the_import_fails(guest: Mapping[str, Any]) -> None:
    service = guest["initrdImport"]["serviceConfig"]
    # ExecStartPost= runs only after a successful start; ExecStopPost= after a failed one too.
    assert "-/bin/umount /run/ivm/identity-disk" in service["ExecStopPost"]
    assert not any("umount" in line for line in service.get("ExecStartPost", []))
    # A refusal goes to the serial console, where the host can read it.
    assert service["StandardError"] == "journal+console"


def test_the_machine_id_placeholder_is_ours_on_every_nixpkgs(guest: Mapping[str, Any]) -> None:
    # nixpkgs 26.05 defines no placeholder: ours is then the only definition.
    assert guest["machineIdOwn"] == [{"text": "", "mode": "0444"}]
    assert (guest["etc"]["machine-id"]["text"], guest["etc"]["machine-id"]["mode"]) == ("", "0444")
    # Newer nixpkgs sets one with mkDefault: ours, a plain definition, still decides.
    assert guest["machineIdUnderOtherDefault"] == {"text": "", "mode": "0444"}


def test_the_guest_agent_allows_only_what_ivm_and_libvirt_use(guest: Mapping[str, Any]) -> None:
    agent = guest["guestAgent"]
    assert agent["enable"] is True
    allowed = re.search(r"--allow-rpcs=(\S+)", agent["execStart"])
    assert allowed, agent["execStart"]
    assert set(allowed.group(1).split(",")) == {
        "guest-sync",
        "guest-sync-delimited",
        "guest-ping",
        "guest-info",
        "guest-network-get-interfaces",
        "guest-shutdown",
        "guest-get-osinfo",
    }


def test_a_health_check_adds_guest_exec_and_nothing_else(guest: Mapping[str, Any]) -> None:
    def allowed(exec_start: str) -> set[str]:
        found = re.search(r"--allow-rpcs=(\S+)", exec_start)
        assert found, exec_start
        return set(found.group(1).split(","))

    agent = guest["guestAgent"]
    assert allowed(agent["withHealthCheck"]) - allowed(agent["execStart"]) == {
        "guest-exec",
        "guest-exec-status",
    }
    assert allowed(agent["execStart"]) <= allowed(agent["withHealthCheck"])


def test_the_guest_agent_runs_only_on_an_accepted_identity(guest: Mapping[str, Any]) -> None:
    # modules/identity-import.sh writes this marker only for an imported or absent identity.
    agent = guest["guestAgent"]
    assert agent["condition"] == [f"{agent['identityRuntime']}/identity-accepted"]


def test_machine_id_and_hostname_placeholders_are_empty(guest: Mapping[str, Any]) -> None:
    assert guest["etc"]["machine-id"]["text"] == ""
    assert guest["etc"]["hostname"]["text"] == ""
    assert guest["hostName"] == ""


def test_identity_import_runs_in_the_initrd_before_the_file_systems_target(
    guest: Mapping[str, Any],
) -> None:
    unit = guest["initrdImport"]
    # initrd-fs.target precedes initrd-switch-root, hence PID 1, journald and sshd of the real root.
    assert "initrd-fs.target" in unit["before"]
    assert "initrd-fs.target" in unit["wantedBy"]
    assert unit["unitConfig"]["DefaultDependencies"] is False
    assert unit["unitConfig"]["RequiresMountsFor"] == ["/sysroot/var"]
    service = unit["serviceConfig"]
    assert service["Type"] == "oneshot"
    exec_start = service["ExecStart"]
    assert "/run/ivm/identity-disk /sysroot/var/identity /run/ivm " in exec_start
    assert any("/dev/disk/by-id/virtio-identity" in line for line in service["ExecStartPre"])
    # The disk is mounted read-only and every pre-step may fail without failing the boot.
    mount = next(line for line in service["ExecStartPre"] if "mount " in line)
    assert mount.startswith("-") and "-o ro," in mount


def test_sshd_uses_the_identity_key_and_authorized_keys(guest: Mapping[str, Any]) -> None:
    sshd = guest["sshd"]
    assert sshd["enable"] is True
    assert sshd["hostKeys"] == [{"path": "/var/identity/ssh_host_ed25519_key", "type": "ed25519"}]
    assert sshd["authorizedKeysFiles"] == ["/var/identity/%u_authorized_keys"]
    assert sshd["generateHostKeys"] is False
    assert sshd["authorizedKeysInHomedir"] is False
    assert sshd["PasswordAuthentication"] is False
    assert sshd["KbdInteractiveAuthentication"] is False
    assert sshd["PermitRootLogin"] == "no"
    assert sshd["condition"] == "/var/identity/ssh_host_ed25519_key"


def test_admin_and_user_have_no_passwords(guest: Mapping[str, Any]) -> None:
    admin, user = guest["users"]["admin"], guest["users"]["user"]
    assert admin["isNormalUser"] and user["isNormalUser"]
    assert "wheel" in admin["extraGroups"]
    assert "wheel" not in user["extraGroups"]
    for account in (admin, user):
        for field in (
            "hashedPassword",
            "password",
            "initialPassword",
            "initialHashedPassword",
            "hashedPasswordFile",
        ):
            assert account[field] is None, field


def test_firewall_applies_identity_ports_at_boot(guest: Mapping[str, Any]) -> None:
    fw = guest["firewall"]
    assert fw["enable"] is True and fw["nftables"] is True
    assert "set ivm_tcp_ports" in fw["table"] and "set ivm_udp_ports" in fw["table"]
    assert "tcp dport @ivm_tcp_ports accept" in fw["extraInputRules"]
    assert "udp dport @ivm_udp_ports accept" in fw["extraInputRules"]
    ports = fw["ports"]
    assert "nftables.service" in ports["after"]
    assert "nftables.service" in ports["wantedBy"]
    assert ports["serviceConfig"]["ExecStart"].endswith(" /var/identity")


def test_journal_is_persistent(guest: Mapping[str, Any]) -> None:
    assert guest["journald"] == "persistent"


def test_nix_cannot_collect_garbage_on_the_read_only_store(guest: Mapping[str, Any]) -> None:
    assert guest["nixGc"] is False
    assert guest["nixEnable"] is False


def test_serial_console_is_the_last_console(guest: Mapping[str, Any]) -> None:
    consoles = [p for p in guest["kernelParams"] if p.startswith("console=")]
    assert consoles[-1].startswith("console=ttyS0")


def test_machines_with_the_same_modules_share_one_image(facts: Mapping[str, Any]) -> None:
    assert facts["web1"]["imageOutPath"] == facts["web2"]["imageOutPath"]
    assert facts["default"]["imageOutPath"] != facts["web1"]["imageOutPath"]
    assert facts["web1"]["webServer"] is True
    assert facts["default"]["webServer"] is False


def test_machines_json_loads_with_the_tool(tmp_path: Path) -> None:
    try:
        from ivm.machines import load_machines
    except ImportError:
        pytest.fail("the ivm package is not importable: `pip install -e .` or PYTHONPATH=python")
    text = nix_eval("packages.x86_64-linux.machines-json.text", raw=True)
    path = tmp_path / "machines.json"
    path.write_text(text)
    machines = load_machines(path)
    assert set(machines) == set(MACHINES)
    web1 = machines["web1"]
    assert web1.system == "x86_64-linux"
    assert (web1.vcpus, web1.memory_mib, web1.var_size_gib) == (2, 1024, 10)
    assert web1.image_attr == "image-web1"
    assert web1.mac is None and web1.libvirt_uri is None
    # Defaults filled in by Nix for what meta.nix leaves out.
    default = machines["default"]
    assert (default.vcpus, default.memory_mib, default.var_size_gib) == (2, 2048, 20)
    assert default.network.type == "network" and default.network.name == "default"
    assert default.image_attr == "image-default"


def test_lib_machines_is_the_machines_json_content() -> None:
    text = nix_eval("packages.x86_64-linux.machines-json.text", raw=True)
    assert json.loads(text) == {"version": 1, "machines": nix_eval("lib.machines")}


def test_every_image_attr_is_a_package() -> None:
    packages = nix_eval("packages.x86_64-linux", apply="builtins.attrNames")
    for name in MACHINES:
        assert f"image-{name}" in packages
    assert {"ivm", "default", "machines-json"} <= set(packages)
