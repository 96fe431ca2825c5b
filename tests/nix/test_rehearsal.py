"""scripts/rehearse-nix-check rehearses the check phase of the derivation nix/package.nix makes:
the same source files, the same test selection and the same declared tools, read from evaluation."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
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
    # Python packages beyond the dependencies: setuptools builds, pytestCheckHook brings pytest.
    python = {t["name"] for t in package["tools"] if t["python"]} - {"setuptools", "python3"}
    assert python == set(rehearsal().CHECK_PYTHON_PACKAGES) - {"pytest"}


def in_rehearsal(command: str) -> subprocess.CompletedProcess[str]:
    """`command` run by sh inside the rehearsal's sandbox (as root: the full one)."""
    if os.geteuid() != 0:
        pytest.skip("the build user, hidden /usr/sbin and private /tmp need root")
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--shell", command], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    ("what", "command"),
    [
        ("an unprivileged build user", 'test "$(id -u)" = 65534'),
        ("a home that does not exist and cannot be made", '! test -e "$HOME" && ! mkdir "$HOME"'),
        ("no XDG runtime directory", 'test -z "${XDG_RUNTIME_DIR:-}"'),
        ("only loopback", "test \"$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ')\" = lo"),
        ("declared tools only", "command -v sfdisk && command -v mkfs.ext4 && ! command -v git"),
        ("no /usr/sbin to fall back on", "! test -e /usr/sbin/sfdisk"),
        ("an empty writable /tmp", 'test -z "$(ls -A /tmp)" && touch /tmp/x'),
        ("the source is the fileset only", "test -d source/tests/unit && ! test -e source/tests/integration"),
    ],
    ids=lambda v: v if " " in v else None,
)
def test_the_sandbox_is_what_the_nix_build_sees(what: str, command: str) -> None:
    done = in_rehearsal(f'cd "$NIX_BUILD_TOP" && {command}')
    assert done.returncode == 0, f"not {what}: {done.stdout}{done.stderr}"
