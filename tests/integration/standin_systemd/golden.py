"""The guest's boot logic as NixOS evaluates it, from the golden files in tests/golden/guest/.

Most texts are the guest's own golden files (scripts/update-guest-golden writes them,
tests/nix/test_guest_golden.py checks them). What only the stand-in needs besides them (the
initrd's /run bind unit, the default resolv.conf, the kernel command line, the initrd manager's
environment, where NixOS links the units) is in tests/golden/standin-systemd/, written by
`python -m tests.integration.standin_systemd.golden` and checked by tests/nix/test_standin_golden.py.
Store hashes are zeroed in both, so the stand-in puts its files at the zeroed paths.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
GUEST = REPO / "tests" / "golden" / "guest"
GOLDEN = REPO / "tests" / "golden" / "standin-systemd"
MACHINE = "default"
UNITS = {
    "ivm-identity.service": GUEST / "initrd" / "ivm-identity.service",
    "ivm-var-layout.service": GUEST / "initrd" / "ivm-var-layout.service",
    "sysroot-run.mount": GOLDEN / "sysroot-run.mount",
}
# sshd_config settings the stand-in's sshd takes over (the rest names NixOS store paths).
SSHD_SETTINGS = (
    "HostKey",
    "HostCertificate",
    "AuthorizedKeysFile",
    "PasswordAuthentication",
    "KbdInteractiveAuthentication",
    "PermitRootLogin",
)

# One `nix eval --apply` over nixosConfigurations: what the stand-in needs besides the guest goldens.
EVAL_APPLY = """cfg:
let
  c = cfg.MACHINE.config;
  initrd = c.boot.initrd.systemd;
  lib = cfg.MACHINE.pkgs.lib;
  units = [ "ivm-identity.service" "ivm-var-layout.service" "sysroot-run.mount" ];
in {
  "sysroot-run.mount" = initrd.units."sysroot-run.mount".text;
  "default-resolv.conf" = c.ivm.identity.defaultResolvConf;
  "boot.json" = builtins.toJSON {
    kernel_params = c.boot.kernelParams;
    manager_environment = builtins.mapAttrs (_: v: "${v}") initrd.managerEnvironment;
    systemd_version = c.systemd.package.version;
    install = lib.genAttrs units (n: { inherit (initrd.units.${n}) wantedBy requiredBy; });
  };
}
""".replace("MACHINE", MACHINE)

FILES = ("sysroot-run.mount", "default-resolv.conf", "boot.json")


@dataclass(frozen=True)
class GuestGolden:
    """The golden texts, read from the repository."""

    units: dict[str, str]  # initrd unit name -> unit file text
    agent_conditions: tuple[str, ...]  # the guest agent unit's Condition…= lines
    fstab: str
    journald_conf: str
    sshd_settings: dict[str, str]  # setting -> value, as sshd_config writes it
    default_resolv_conf: str
    boot: dict[str, Any]

    @property
    def fstab_path(self) -> str:
        return str(self.boot["manager_environment"]["SYSTEMD_SYSROOT_FSTAB"])


def render(evaluated: dict[str, str]) -> dict[str, str]:
    """File name -> text, as written to tests/golden/standin-systemd/ (store hashes zeroed)."""
    from tests.nix.guest_golden import normalise

    out = {name: normalise(evaluated[name]) for name in FILES}
    out["boot.json"] = json.dumps(json.loads(out["boot.json"]), indent=2, sort_keys=True) + "\n"
    return out


def _sshd_settings(config: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in config.splitlines():
        key, _, value = line.strip().partition(" ")
        if key in SSHD_SETTINGS:
            found[key] = f"{found[key]}\n{key} {value}" if key in found else value
    return found


def _conditions(unit: str) -> tuple[str, ...]:
    return tuple(line for line in unit.splitlines() if line.startswith("Condition"))


def load() -> GuestGolden:
    return GuestGolden(
        units={name: path.read_text() for name, path in UNITS.items()},
        agent_conditions=_conditions((GUEST / "qemu-guest-agent.service").read_text()),
        fstab=(GUEST / "initrd" / "fstab").read_text(),
        journald_conf=(GUEST / "journald.conf").read_text(),
        sshd_settings=_sshd_settings((GUEST / "sshd_config").read_text()),
        default_resolv_conf=(GOLDEN / "default-resolv.conf").read_text(),
        boot=json.loads((GOLDEN / "boot.json").read_text()),
    )


def evaluate() -> dict[str, str]:
    from tests.nix.nixeval import nix_eval

    return dict(nix_eval("nixosConfigurations", apply=EVAL_APPLY))


def main() -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, text in render(evaluate()).items():
        (GOLDEN / name).write_text(text)
        print(f"wrote {GOLDEN / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
