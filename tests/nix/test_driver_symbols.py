"""The names tests/nix/test_check_scripts.py lets the VM test scripts use are names the pinned NixOS
test driver defines (test_driver/driver.py `test_symbols()`), so a script that passes the lint here
does not fail the driver's pyflakes check on a Nix host for a name the driver lacks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.nix.nixeval import nixpkgs_override
from tests.nix.test_check_scripts import DRIVER_GLOBALS

pytestmark = pytest.mark.nix

DRIVER = Path("nixos/lib/test-driver/src/test_driver/driver.py")


def nixpkgs_tree() -> Path:
    override = nixpkgs_override()
    if not override:
        pytest.skip("no local nixpkgs tree (IVM_NIXPKGS) to read the test driver from")
    return Path(override[-1].removeprefix("path:"))


def driver_symbols(source: str) -> set[str]:
    """The keyword names of `general_symbols = dict(...)` inside `test_symbols`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == "test_symbols":
            for stmt in ast.walk(node):
                if (
                    isinstance(stmt, ast.Assign)
                    and isinstance(stmt.targets[0], ast.Name)
                    and stmt.targets[0].id == "general_symbols"
                    and isinstance(stmt.value, ast.Call)
                ):
                    return {kw.arg for kw in stmt.value.keywords if kw.arg}
    raise AssertionError("test_symbols() / general_symbols not found in the driver")


def test_the_lint_allows_only_names_the_driver_defines() -> None:
    symbols = driver_symbols((nixpkgs_tree() / DRIVER).read_text())
    assert "subtest" in symbols
    assert symbols >= DRIVER_GLOBALS, f"not defined by the driver: {DRIVER_GLOBALS - symbols}"
