"""Evaluate this flake with Nix against the nixpkgs IVM_NIXPKGS chooses (docs/testing.md).

IVM_NIXPKGS=DIR overrides the nixpkgs input with that tree (offline); IVM_NIXPKGS=locked evaluates
the revision flake.lock pins, which Nix fetches; unset, the tree named by the evaluation-only Nix's
nixpkgs.storepath file is used when there is one. Without Nix or a nixpkgs the tests that need them
are skipped, saying which is missing.
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
DEFAULT_TREE_FILE = Path("/opt/nix-eval/nixpkgs.storepath")
NIX_FALLBACK = Path("/opt/nix-eval/bin/nix")


def nix_binary() -> str | None:
    found = shutil.which("nix")
    if found:
        return found
    return str(NIX_FALLBACK) if NIX_FALLBACK.exists() else None


def nixpkgs_override() -> list[str] | None:
    """The --override-input arguments, [] for the locked nixpkgs, None when there is no tree."""
    given = os.environ.get("IVM_NIXPKGS")
    if given == "locked":
        return []
    if given:
        tree = given
    elif DEFAULT_TREE_FILE.exists():
        tree = DEFAULT_TREE_FILE.read_text().strip()
    else:
        return None
    if not Path(tree).is_dir():
        pytest.fail(f"IVM_NIXPKGS / {DEFAULT_TREE_FILE} names {tree}, which is not a directory")
    return ["--override-input", "nixpkgs", f"path:{tree}"]


def require_nix() -> tuple[str, list[str]]:
    """The nix command and its nixpkgs override, or skip the calling test with the reason."""
    nix = nix_binary()
    if nix is None:
        pytest.skip("Nix is not installed (put `nix` on PATH)")
    override = nixpkgs_override()
    if override is None:
        pytest.skip(
            "no nixpkgs tree: set IVM_NIXPKGS to a nixpkgs checkout or store path "
            "(or IVM_NIXPKGS=locked to fetch and use flake.lock's)"
        )
    return nix, override


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
