"""scripts/rehearse-nix-check rehearses the check phase of the derivation nix/package.nix makes:
the same source files, the same test selection and the same declared tools, read from evaluation."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.nix.nixeval import REPO, nix_eval

SCRIPT = REPO / "scripts" / "rehearse-nix-check"

PACKAGE = """
p: {
  src = "${p.src}";
  inherit (p) enabledTestPaths pythonImportsCheck;
  # buildPythonApplication appends nativeCheckInputs to nativeBuildInputs.
  tools = map (d: { name = d.pname or d.name; python = d ? pythonModule; }) p.nativeBuildInputs;
}
"""


def rehearsal() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("rehearse_nix_check", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def package() -> dict[str, Any]:
    evaluated: dict[str, Any] = nix_eval("packages.x86_64-linux.ivm", apply=PACKAGE)
    return evaluated


@pytest.mark.nix
def test_the_rehearsal_copies_exactly_the_package_source(package: dict[str, Any]) -> None:
    # Evaluating `src` adds the fileset to the store: the files the build sees.
    src = Path(package["src"])
    in_store = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
    check = json.loads(rehearsal().CHECK_FILE.read_text())
    assert in_store == rehearsal().source_files(check["fileset"])


@pytest.mark.nix
def test_the_rehearsal_runs_the_package_test_selection(package: dict[str, Any]) -> None:
    check = json.loads(rehearsal().CHECK_FILE.read_text())
    assert package["enabledTestPaths"] == check["enabledTestPaths"]
    assert package["pythonImportsCheck"] == check["pythonImportsCheck"]


@pytest.mark.nix
def test_the_rehearsal_path_holds_the_declared_tools(package: dict[str, Any]) -> None:
    # Hooks are setup scripts, not tools on PATH; Python is the rehearsal's own interpreter.
    tools = {
        t["name"]
        for t in package["tools"]
        if not t["python"] and not t["name"].endswith(("hook", "hook.sh")) and t["name"] != "python3"
    }
    assert tools == set(rehearsal().CHECK_TOOLS) - {"stdenv"}
