"""Evaluate this flake with Nix against the nixpkgs IVM_NIXPKGS chooses (docs/testing.md).

IVM_NIXPKGS=DIR overrides the nixpkgs input with that tree (offline); unset or `locked`, the
revision flake.lock pins is evaluated, which Nix fetches once. Nix is the `nix` on PATH; without it
the tests that need it are skipped, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def nix_binary() -> str | None:
    return shutil.which("nix")


def nixpkgs_override() -> list[str]:
    """The --override-input arguments; [] for the nixpkgs flake.lock pins."""
    tree = os.environ.get("IVM_NIXPKGS")
    if not tree or tree == "locked":
        return []
    if not Path(tree).is_dir():
        pytest.fail(f"IVM_NIXPKGS names {tree}, which is not a directory")
    return ["--override-input", "nixpkgs", f"path:{tree}"]


def require_nix() -> tuple[str, list[str]]:
    """The nix command and its nixpkgs override, or skip the calling test with the reason."""
    nix = nix_binary()
    if nix is None:
        pytest.skip("Nix is not installed (put `nix` on PATH)")
    return nix, nixpkgs_override()


def nix_command(*args: str) -> Any:
    """Runs `nix ARGS` on this flake with the chosen nixpkgs and returns its decoded JSON output."""
    nix, override = require_nix()
    cmd = [
        nix,
        "--extra-experimental-features",
        "nix-command flakes",
        *args,
        "--no-write-lock-file",
        *override,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900, cwd=REPO)
    if proc.returncode != 0:
        pytest.fail(f"nix {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)


def nix_eval(attr: str, apply: str | None = None, raw: bool = False) -> Any:
    """`nix eval` one attribute of this flake; JSON is decoded, raw text returned as is."""
    nix, override = require_nix()
    cmd = [
        nix,
        "--extra-experimental-features",
        "nix-command flakes",
        "eval",
        "--no-write-lock-file",
        *override,
        "--raw" if raw else "--json",
        f"{REPO}#{attr}",
    ]
    if apply is not None:
        cmd += ["--apply", apply]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"nix eval {attr} failed:\n{proc.stderr[-4000:]}")
    return proc.stdout if raw else json.loads(proc.stdout)
