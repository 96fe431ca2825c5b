"""The guest's boot logic as NixOS evaluates it, kept as golden files in tests/golden/guest/.

`python -m tests.integration.standin_systemd.golden` rewrites them from `nix eval`; the nix test
tests/nix/test_guest_golden.py fails when they drift from the evaluation. The systemd stand-in
installs exactly these texts (see mapping.py for the few paths it maps).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
GOLDEN = REPO / "tests" / "golden" / "guest"
MACHINE = "default"

# One `nix eval --apply` over nixosConfigurations: every text the stand-in takes from the guest.
EVAL_APPLY = """cfg:
let
  c = cfg.MACHINE.config;
  initrd = c.boot.initrd.systemd;
  unit = n: initrd.units.${n}.text;
  ssh = c.services.openssh;
  lib = cfg.MACHINE.pkgs.lib;
in {
  "ivm-identity.service" = unit "ivm-identity.service";
  "ivm-var-layout.service" = unit "ivm-var-layout.service";
  "sysroot-run.mount" = unit "sysroot-run.mount";
  "initrd-fstab" = initrd.managerEnvironment.SYSTEMD_SYSROOT_FSTAB.text;
  "journald.conf" = c.environment.etc."systemd/journald.conf".text;
  "default-resolv.conf" = c.ivm.identity.defaultResolvConf;
  "boot.json" = builtins.toJSON {
    kernel_params = c.boot.kernelParams;
    manager_environment = builtins.mapAttrs (_: v: "${v}") initrd.managerEnvironment;
    identity_directory = c.ivm.identity.directory;
    install = lib.genAttrs [ "ivm-identity.service" "ivm-var-layout.service" "sysroot-run.mount" ] (n: {
      inherit (initrd.units.${n}) wantedBy requiredBy;
    });
    systemd_version = c.systemd.package.version;
    sshd = {
      HostKey = map (k: k.path) ssh.hostKeys;
      AuthorizedKeysFile = ssh.authorizedKeysFiles;
      inherit (ssh.settings) PasswordAuthentication KbdInteractiveAuthentication PermitRootLogin;
    };
  };
}
""".replace("MACHINE", MACHINE)

UNITS = ("ivm-identity.service", "ivm-var-layout.service", "sysroot-run.mount")
FILES = (
    "ivm-identity.service",
    "ivm-var-layout.service",
    "sysroot-run.mount",
    "initrd-fstab",
    "journald.conf",
    "default-resolv.conf",
    "boot.json",
)


@dataclass(frozen=True)
class GuestGolden:
    """The golden texts, read from the repository."""

    units: dict[str, str]  # initrd unit name -> unit file text
    fstab: str
    journald_conf: str
    default_resolv_conf: str
    boot: dict[str, Any]

    @property
    def fstab_path(self) -> str:
        return str(self.boot["manager_environment"]["SYSTEMD_SYSROOT_FSTAB"])


def render(evaluated: dict[str, str]) -> dict[str, str]:
    """File name -> text, as written to tests/golden/guest/ (boot.json pretty-printed)."""
    out = {name: evaluated[name] for name in FILES}
    out["boot.json"] = json.dumps(json.loads(evaluated["boot.json"]), indent=2, sort_keys=True) + "\n"
    return out


def load(directory: Path = GOLDEN) -> GuestGolden:
    text = {name: (directory / name).read_text() for name in FILES}
    return GuestGolden(
        units={n: text[n] for n in UNITS},
        fstab=text["initrd-fstab"],
        journald_conf=text["journald.conf"],
        default_resolv_conf=text["default-resolv.conf"],
        boot=json.loads(text["boot.json"]),
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
