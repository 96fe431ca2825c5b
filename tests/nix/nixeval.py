"""Evaluate this flake with Nix, offline, against a local nixpkgs tree.

The tree comes from IVM_NIXPKGS (a nixpkgs checkout or store path), else from the tree that
shared/tools/setup-nixpkgs.sh lays out (/opt/nix-eval/nixpkgs.storepath). IVM_NIXPKGS=locked uses
the nixpkgs pinned in flake.lock instead (a host that can download it). Without Nix or a tree the
tests that need it are skipped, saying which is missing.
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
        pytest.skip("Nix is not installed (shared/tools/setup-nix.sh installs an evaluation-only Nix)")
    override = nixpkgs_override()
    if override is None:
        pytest.skip(
            "no nixpkgs tree: set IVM_NIXPKGS to a nixpkgs checkout or store path "
            "(or IVM_NIXPKGS=locked to use flake.lock's), or run shared/tools/setup-nixpkgs.sh"
        )
    return nix, override


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
