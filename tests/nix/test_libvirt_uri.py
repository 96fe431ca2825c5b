"""nix/machine-meta.nix accepts exactly the libvirt URIs the tool accepts: a meta.nix with
`qemu+ext:///system?command=./machines/evil/pwn` fails evaluation, before any tool runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ivm.hypervisor.uri import UnsafeUriError, parse_uri
from tests.nix.nixeval import REPO, require_nix
from tests.unit.test_uri import BAD, GOOD

pytestmark = pytest.mark.nix


def accepted_by_nix(uris: list[str], tmp_path: Path) -> list[bool]:
    """Each URI as `libvirt_uri` of a meta.nix, evaluated through the schema module."""
    nix, override = require_nix()
    if not override:
        pytest.skip("needs a local nixpkgs tree (IVM_NIXPKGS) for its lib")
    tree = override[-1].removeprefix("path:")
    listing = tmp_path / "uris.json"
    listing.write_text(json.dumps(uris))
    expr = (
        f"let lib = import {tree}/lib; check = u: (builtins.tryEval (lib.evalModules {{"
        f' specialArgs = {{ name = "evil"; }}; modules = [ {REPO}/nix/machine-meta.nix'
        f' {{ config = {{ system = "x86_64-linux"; libvirt_uri = u; }}; }} ]; }})'
        ".config.libvirt_uri).success;"
        f" in map check (builtins.fromJSON (builtins.readFile {listing}))"
    )
    argv = [nix, "--extra-experimental-features", "nix-command", "eval", "--impure", "--json", "--expr", expr]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: list[bool] = json.loads(proc.stdout)
    return result


def accepted_by_tool(uri: str) -> bool:
    try:
        parse_uri(uri)
    except UnsafeUriError:
        return False
    return True


def test_the_schema_and_the_tool_agree(tmp_path: Path) -> None:
    uris = list(GOOD) + list(BAD)
    verdicts = dict(zip(uris, accepted_by_nix(uris, tmp_path), strict=True))
    assert verdicts["qemu+ext:///system?command=./machines/evil/pwn"] is False
    assert verdicts["qemu+ssh://root@host1/system"] is True
    assert {u: v for u, v in verdicts.items() if v != accepted_by_tool(u)} == {}
