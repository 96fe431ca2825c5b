"""The texts NixOS evaluates for the guest's boot, kept as golden files in tests/golden/guest/.

One `nix eval` of the `default` machine yields the initrd units and fstab, the sshd unit, journald's
configuration and the nftables ruleset as systemd and nft read them. Two texts are outputs of tiny
text derivations that evaluation alone does not produce (the generated sshd_config and the nftables
deletions file); they are rebuilt here from their `.drv` files (`nix derivation show`), the way their
builders would, with no build. Store hashes are replaced by zeros, so a golden changes when the text
changes, not when an unrelated input does.

`scripts/update-guest-golden` writes the files; tests/nix/test_guest_golden.py fails when one differs.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.nix.nixeval import REPO, nix_binary, nixpkgs_override

GOLDEN_DIR = REPO / "tests" / "golden" / "guest"
MACHINE = "default"
REGENERATE = "scripts/update-guest-golden"
NIX_FEATURES = ["--extra-experimental-features", "nix-command flakes"]
STORE_HASH = re.compile(r"/nix/store/[0-9a-df-np-sv-z]{32}-")
ZERO_HASH = "/nix/store/" + "0" * 32 + "-"

# Unit texts come from `<units>.<name>.text`, what NixOS writes into the unit directory.
EXPRESSION = """
c: let
  cfg = c.config;
  lib = c.pkgs.lib;
  initrdUnit = n: cfg.boot.initrd.systemd.units.${n}.text;
  unit = n: cfg.systemd.units.${n}.text;
  fstab = lib.findFirst (p: (p.source.name or "") == "initrd-fstab")
    (throw "no initrd-fstab in boot.initrd.systemd.storePaths") cfg.boot.initrd.systemd.storePaths;
  rules = builtins.elemAt cfg.systemd.services.nftables.serviceConfig.ExecStart 1;
in {
  "initrd/ivm-identity.service" = initrdUnit "ivm-identity.service";
  "initrd/ivm-var-layout.service" = initrdUnit "ivm-var-layout.service";
  "initrd/fstab" = fstab.source.text;
  "sshd.service" = unit "sshd.service";
  "qemu-guest-agent.service" = unit "qemu-guest-agent.service";
  "ivm-firewall-ports.service" = unit "ivm-firewall-ports.service";
  "journald.conf" = cfg.environment.etc."systemd/journald.conf".text;
  "nftables.nft" = rules.text;
  "image/ivm-image.sh" = cfg.system.build.ivmImage.buildCommand;
  drv = {
    sshd_config = cfg.environment.etc."ssh/sshd_config".source.drvPath;
    nftables = rules.drvPath;
    # The writeShellApplication scripts, found in the string context of the units that run them.
    scripts = lib.concatMap (s: builtins.attrNames (builtins.getContext s)) [
      cfg.boot.initrd.systemd.services.ivm-identity.serviceConfig.ExecStart
      cfg.systemd.services.ivm-firewall-ports.serviceConfig.ExecStart
    ];
  };
}
"""

# The flake apps' launchers (nix/apps.nix), by the derivation in each program's string context.
APPS = """
apps: builtins.mapAttrs (_: app: builtins.attrNames (builtins.getContext app.program)) apps
"""
SCRIPTS = ("ivm-identity-import", "ivm-firewall-ports")


class GoldenError(Exception):
    """Nix is missing or an evaluation failed; the message says which."""


def nix_command() -> tuple[str, list[str]]:
    nix = nix_binary()
    if nix is None:
        raise GoldenError("Nix is not installed")
    return nix, nixpkgs_override()


def run_nix(args: list[str]) -> str:
    nix, _ = nix_command()
    proc = subprocess.run(
        [nix, *NIX_FEATURES, *args], capture_output=True, text=True, check=False, timeout=900
    )
    if proc.returncode != 0:
        raise GoldenError(f"nix {args[0]} failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


def derivations(*paths: str) -> Mapping[str, Mapping[str, object]]:
    shown = json.loads(run_nix(["derivation", "show", *paths]))
    # Newer Nix nests the map under "derivations" and drops the /nix/store prefix.
    found: Mapping[str, Mapping[str, object]] = shown.get("derivations", shown)
    return {k if k.startswith("/nix/store/") else f"/nix/store/{k}": v for k, v in found.items()}


def input_named(drv: Mapping[str, object], name: str) -> str:
    inputs = drv["inputDrvs"]
    assert isinstance(inputs, dict)
    for path in inputs:
        if path.endswith(f"-{name}.drv"):
            return path if path.startswith("/nix/store/") else f"/nix/store/{path}"
    raise GoldenError(f"no input derivation named {name}")


def env(drv: Mapping[str, object]) -> Mapping[str, str]:
    found = drv["env"]
    assert isinstance(found, dict)
    return found


def written_text(drv_path: str) -> str:
    """The output of a writeTextFile derivation: its `text`, as the builder prints it."""
    text = env(derivations(drv_path)[drv_path]).get("text")
    if text is None:
        raise GoldenError(f"{drv_path} is not a writeTextFile derivation")
    return text


def run_command_text(drv_path: str, inputs: Mapping[str, str]) -> str:
    """The output of a runCommand whose inputs are text files: its script run by bash, here."""
    script = env(derivations(drv_path)[drv_path])["buildCommand"]
    with tempfile.TemporaryDirectory(prefix="ivm-golden-") as tmp:
        for store_path, text in inputs.items():
            local = Path(tmp) / Path(store_path).name
            local.write_text(text)
            script = script.replace(store_path, str(local))
        out = Path(tmp) / "out"
        subprocess.run(["bash", "-euc", script], env={"out": str(out), "PATH": "/usr/bin:/bin"}, check=True)
        return out.read_text()


def sshd_config(drv_path: str) -> str:
    """sshd.nix: `cat ${configFile} - <<EOL … EOL`, configFile being a writeText of the settings."""
    settings_drv = input_named(derivations(drv_path)[drv_path], "sshd.conf-settings")
    settings_out = env(derivations(settings_drv)[settings_drv])["out"]
    return run_command_text(drv_path, {settings_out: written_text(settings_drv)})


def nftables_deletions(rules_drv: str) -> str:
    deletions = input_named(derivations(rules_drv)[rules_drv], "nftables-deletions")
    return written_text(deletions)


def normalise(text: str) -> str:
    return STORE_HASH.sub(ZERO_HASH, text)


def nix_eval_json(attr: str, apply: str) -> dict[str, Any]:
    _, override = nix_command()
    args = ["eval", "--no-write-lock-file", *override, "--json", f"{REPO}#{attr}", "--apply", apply]
    evaluated: dict[str, Any] = json.loads(run_nix(args))
    return evaluated


def script_texts(drvs: list[str], names: tuple[str, ...]) -> dict[str, str]:
    """writeShellApplication / writeShellScript outputs by name, from their derivations' `text`."""
    found = {}
    for name in names:
        matching = [d for d in drvs if d.endswith(f"-{name}.drv")]
        if len(matching) != 1:
            raise GoldenError(f"expected one derivation named {name}, found {matching}")
        found[name] = written_text(matching[0])
    return found


def evaluate() -> dict[str, str]:
    """Every golden file's name and evaluated text, store hashes zeroed."""
    evaluated = nix_eval_json(f"nixosConfigurations.{MACHINE}", EXPRESSION)
    drv = evaluated.pop("drv")
    texts: dict[str, str] = dict(evaluated)
    texts["sshd_config"] = sshd_config(drv["sshd_config"])
    texts["nftables-deletions.nft"] = nftables_deletions(drv["nftables"])
    for name, text in script_texts(drv["scripts"], SCRIPTS).items():
        texts[f"scripts/{name}"] = text
    apps = nix_eval_json("apps.x86_64-linux", APPS)
    launchers = sorted({d for drvs in apps.values() for d in drvs if "-ivm-" in d})
    names = tuple(Path(d).name.split("-", 1)[1].removesuffix(".drv") for d in launchers)
    for name, text in script_texts(launchers, names).items():
        texts[f"launchers/{name}"] = text
    return {name: normalise(text) for name, text in sorted(texts.items())}


def on_disk() -> dict[str, str]:
    return {
        str(p.relative_to(GOLDEN_DIR)): p.read_text()
        for p in sorted(GOLDEN_DIR.rglob("*"))
        if p.is_file() and p.name != "README.md"
    }


def write(texts: Mapping[str, str]) -> None:
    for stale in set(on_disk()) - set(texts):
        (GOLDEN_DIR / stale).unlink()
    for name, text in texts.items():
        path = GOLDEN_DIR / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
