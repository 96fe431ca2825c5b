"""What the flake takes from nixpkgs: the tree evaluated is the one asked for (a local tree, or the
revision flake.lock pins with IVM_NIXPKGS=locked), and the formatter is the one nix/formatter.nix
names, which exists on the pinned branch.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.nix.nixeval import REPO, nix_command, nix_eval

pytestmark = pytest.mark.nix


def locked_nixpkgs() -> dict[str, Any]:
    lock = json.loads((REPO / "flake.lock").read_text())
    node: dict[str, Any] = lock["nodes"][lock["nodes"]["root"]["inputs"]["nixpkgs"]]["locked"]
    return node


def test_the_nixpkgs_evaluated_is_the_one_asked_for() -> None:
    metadata = nix_command("flake", "metadata", "--json", str(REPO))
    nixpkgs = metadata["locks"]["nodes"][metadata["locks"]["nodes"]["root"]["inputs"]["nixpkgs"]]["locked"]
    if os.environ.get("IVM_NIXPKGS") == "locked":
        pinned = locked_nixpkgs()
        assert (nixpkgs["rev"], nixpkgs["narHash"]) == (pinned["rev"], pinned["narHash"])
    else:
        assert nixpkgs["type"] == "path", nixpkgs


def test_the_lock_pins_a_nixos_release_branch() -> None:
    pinned = locked_nixpkgs()
    assert pinned["type"] == "github" and (pinned["owner"], pinned["repo"]) == ("NixOS", "nixpkgs")
    assert len(pinned["rev"]) == 40 and pinned["narHash"].startswith("sha256-")
    flake = (REPO / "flake.nix").read_text()
    assert 'inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";' in flake


def test_the_formatter_is_one_nixfmt_everywhere() -> None:
    chosen = nix_eval("formatter.x86_64-linux.nixfmt.pname")
    # nixfmt-rs where nixpkgs has it (this tree), else the official nixfmt (same output).
    assert chosen in {"nixfmt-rs", "nixfmt"}
    shell = nix_eval(
        "devShells.x86_64-linux.default",
        apply="s: map (p: p.pname or p.name) s.nativeBuildInputs",
    )
    check = nix_eval(
        "checks.x86_64-linux.formatting",
        apply="c: map (p: p.pname or p.name) c.nativeBuildInputs",
    )
    for inputs in (shell, check):
        assert chosen in inputs and not {"nixfmt-rs", "nixfmt"} - {chosen} & set(inputs), inputs


def test_without_nixfmt_rs_the_formatter_falls_back_to_nixfmt() -> None:
    tree = os.environ.get("IVM_NIXPKGS", "")
    if tree in {"", "locked"}:
        pytest.skip("needs a local nixpkgs tree to import (IVM_NIXPKGS=PATH)")
    # A nixpkgs without nixfmt-rs (as 26.05 may be); its nixfmt is a marker, as this tree cannot
    # evaluate the Haskell one.
    expr = f"""
      let
        pkgs = import {tree} {{ system = "x86_64-linux"; }};
        older = removeAttrs pkgs [ "nixfmt-rs" ] // {{ nixfmt = pkgs.writeText "official-nixfmt" ""; }};
      in (import {REPO}/nix/formatter.nix {{ pkgs = older; }}).nixfmt.name
    """
    assert nix_command("eval", "--impure", "--json", "--expr", expr) == "official-nixfmt"
