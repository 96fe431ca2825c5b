"""nixosModules.host (services.ivm), read from the evaluated host node of checks/host-module.nix.

The unit runs the tool and images of this flake revision by store path (nothing is built at boot),
libvirtd is on, and a projectDir that would put the machines' private keys into the Nix store is
refused by an assertion naming it. The VM test in checks/ proves the unit does what it says.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.nix.nixeval import nix_eval

pytestmark = pytest.mark.nix

PROJECT = "/var/lib/ivm/project"

# Each variant: services.ivm settings laid over the sample host; the assertion messages that fail.
VARIANTS = {
    "sample": "{ }",
    "store_path": '{ projectDir = "/nix/store/00000000000000000000000000000000-project"; }',
    "nix_path": "{ projectDir = /var/lib/ivm/project; }",
    "interpolated": '{ projectDir = "${builtins.toFile "project" ""}"; }',
    "relative": '{ projectDir = "project"; }',
    "home": '{ projectDir = "/home/alice/ivm"; }',
    "unknown": '{ machines = [ "web1" "nosuch" ]; }',
    "remote": '{ libvirtUri = "qemu+ssh://root@elsewhere/system"; }',
}

HOST = """
test: let
  host = test.nodes.host;
  unit = host.systemd.services.ivm-fleet;
  failing = settings: map (a: a.message) (builtins.filter (a: !a.assertion)
    (test.extend { modules = [ { nodes.host.services.ivm = settings; } ]; }).nodes.host.assertions);
in {
  inherit (unit) script wantedBy requires after restartIfChanged environment;
  execStart = unit.serviceConfig.ExecStart;
  user = unit.serviceConfig.User;
  deviceAllow = unit.serviceConfig.DeviceAllow or [ ];
  runtimeDirectory = unit.serviceConfig.RuntimeDirectory or null;
  readWrite = unit.serviceConfig.ReadWritePaths;
  lockDir = host.systemd.tmpfiles.settings.ivm.${unit.environment.XDG_RUNTIME_DIR}.d or null;
  triggers = map toString unit.restartTriggers;
  libvirtd = host.virtualisation.libvirtd.enable;
  groups = host.users.users.ivm.extraGroups;
  failing = builtins.mapAttrs (_: failing) VARIANTS;
}
"""


@pytest.fixture(scope="module")
def host() -> dict[str, Any]:
    variants = "{ " + " ".join(f"{name} = {value};" for name, value in VARIANTS.items()) + " }"
    apply = HOST.replace("VARIANTS", variants)
    facts: dict[str, Any] = nix_eval("checks.x86_64-linux.host-module", apply=apply)
    return facts


@pytest.fixture(scope="module")
def built() -> dict[str, str]:
    paths: dict[str, str] = nix_eval(
        "packages.x86_64-linux", apply="p: { ivm = p.ivm.outPath; image = p.image-web1.outPath; }"
    )
    return paths


def test_the_sample_host_passes_every_assertion(host: dict[str, Any]) -> None:
    assert host["failing"]["sample"] == []


def test_the_unit_may_open_dev_kvm(host: dict[str, Any]) -> None:
    # The tool picks KVM by access(2) to /dev/kvm; a closed device policy alone would force TCG.
    assert "/dev/kvm rw" in host["deviceAllow"]


def test_the_locks_outlive_a_restart_of_the_unit(host: dict[str, Any]) -> None:
    # A RuntimeDirectory is removed whenever the unit stops; tmpfiles keeps the lock directory.
    assert host["runtimeDirectory"] is None
    lock_dir = host["lockDir"]
    assert (lock_dir["type"], lock_dir["user"], lock_dir["group"], lock_dir["mode"]) == (
        "d",
        "ivm",
        "ivm",
        "0700",
    )
    assert host["environment"]["XDG_RUNTIME_DIR"] in host["readWrite"]


def test_libvirtd_is_on_and_the_unit_follows_it(host: dict[str, Any]) -> None:
    assert host["libvirtd"] is True
    assert "libvirtd.service" in host["requires"]
    assert {"libvirtd.service", "libvirt-guests.service"} <= set(host["after"])
    assert host["wantedBy"] == ["multi-user.target"]
    assert host["restartIfChanged"] is True
    assert host["user"] == "ivm"
    assert "libvirtd" in host["groups"]


def test_the_unit_runs_the_tool_and_image_of_this_revision(
    host: dict[str, Any], built: dict[str, str]
) -> None:
    assert host["execStart"].split()[0].endswith("/bin/ivm-fleet-start")
    apply = [line for line in host["script"].splitlines() if " apply " in line]
    assert len(apply) == 1, host["script"]
    argv = apply[0].split()
    assert argv[0] == f"{built['ivm']}/bin/ivm"
    assert argv[argv.index("--image") + 1] == built["image"]
    assert argv[argv.index("--root") + 1] == PROJECT
    assert argv[argv.index("--connect") + 1] == "qemu:///system"
    assert "--no-eval" in argv  # no `nix eval` or `nix build` at boot
    assert argv[argv.index("apply") + 1] == "web1"
    assert {built["ivm"], built["image"]} <= set(host["triggers"])
    machines_json = argv[argv.index("--machines") + 1]
    assert machines_json in host["triggers"]


def test_the_unit_keeps_the_project_out_of_the_store(host: dict[str, Any]) -> None:
    text = host["script"] + json.dumps(host["environment"]) + " ".join(host["triggers"])
    assert f"/nix/store/{PROJECT}" not in text
    assert "machines/web1" not in text  # the identity is read at run time, never named in Nix


@pytest.mark.parametrize("variant", ["store_path", "nix_path", "interpolated"])
def test_a_project_dir_in_the_store_is_refused(host: dict[str, Any], variant: str) -> None:
    messages = host["failing"][variant]
    assert any(m.startswith("services.ivm.projectDir = ") for m in messages), messages
    assert any("Nix store" in m or "Nix path" in m for m in messages), messages


@pytest.mark.parametrize(
    ("variant", "named"),
    [
        ("relative", '"project" is not an absolute path'),
        ("home", "is under /home"),
        ("unknown", "nosuch is not a machine of this flake"),
        ("remote", "qemu+ssh://root@elsewhere/system"),
    ],
)
def test_a_bad_setting_is_refused_naming_it(host: dict[str, Any], variant: str, named: str) -> None:
    assert any(named in m for m in host["failing"][variant]), host["failing"][variant]
