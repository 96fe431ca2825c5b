"""The command line starts as fast as click: --help, --version and usage errors import no command
module, libvirt or lxml; the table that stands in for the modules matches what they define."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import click
import pytest

import ivm
from ivm.cli import cli
from ivm.cli.commands import COMMANDS, MODULES

PROBE = """
import sys
from ivm.cli import main
sys.argv = ["ivm", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("libvirt", "lxml", "libvirtmod")
               or m.startswith(("ivm.config", "ivm.ops", "ivm.hypervisor", "ivm.cli.vm", "ivm.cli.fleet")))
print("IMPORTED", " ".join(heavy), file=sys.stderr)
"""


def imported_by(*args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=False, timeout=60
    )
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("IMPORTED")]
    return done, line.split()[1:]


@pytest.mark.parametrize(
    "args",
    [("--help",), ("--version",), ("no-such-command",), ("--no-such-option",), ()],
)
def test_light_paths_import_no_command_module(args: tuple[str, ...]) -> None:
    done, heavy = imported_by(*args)
    assert heavy == [], f"ivm {' '.join(args)} imported {heavy}"
    assert "Traceback" not in done.stderr


def test_import_alone_is_light() -> None:
    probe = "import sys, ivm.cli; print(*(m for m in sys.modules if m.startswith(('libvirt', 'lxml'))))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_a_command_still_imports_what_it_needs() -> None:
    """The probe can fail: a real command loads its module (and with it libvirt)."""
    _done, heavy = imported_by("status", "--help")
    assert "ivm.cli.fleet" in heavy and "libvirt" in heavy


@pytest.mark.parametrize("columns", ["50", "80", "200"])
def test_help_lists_the_same_as_with_every_module_loaded(columns: str) -> None:
    def helps(preload: str) -> str:
        probe = f"import sys; {preload}; from ivm.cli import main; sys.argv = ['ivm', '--help']; main()"
        env = {**os.environ, "COLUMNS": columns}
        return subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
        ).stdout

    lazy = helps("pass")
    loaded = helps("; ".join(f"import {m}" for m in MODULES))
    assert "Commands:" in lazy and "Start NAME." in lazy
    assert lazy == loaded


def test_table_matches_the_commands_defined() -> None:
    for module in MODULES:
        importlib.import_module(module)
    defined = {name: cmd for name, cmd in cli.commands.items() if not cmd.hidden}
    assert sorted(COMMANDS) == sorted(defined), "add the command to ivm/cli/commands.py"
    for name, cmd in defined.items():
        assert cmd.callback is not None and cmd.callback.__module__ == COMMANDS[name].module, name
        stand_in = click.Command(name, help=COMMANDS[name].help)
        for limit in (30, 45, 60, 80, 120, 400):
            assert stand_in.get_short_help_str(limit) == cmd.get_short_help_str(limit), (name, limit)


def test_a_named_command_is_found_on_first_use() -> None:
    start = cli.get_command(click.Context(cli), "start")
    assert start is not None and start.name == "start"
    assert start.callback is not None and start.callback.__module__ == COMMANDS["start"].module
    assert cli.get_command(click.Context(cli), "no-such-command") is None


def test_version_matches_the_package_metadata() -> None:
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    if pyproject.is_file():
        assert tomllib.loads(pyproject.read_text())["project"]["version"] == ivm.__version__
    assert version("ivm") == ivm.__version__
