"""Shell completion: each shell's own completion machinery, run on the script `ivm completion` prints,
completes commands, options and machine names (skipped where that shell is not installed)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Project, RunCli, machine_entry

IVM_BIN = Path(sys.executable).parent  # the console script `ivm` sits beside this interpreter


@functools.cache
def script(shell: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "ivm", "completion", shell], capture_output=True, text=True, check=True
    )
    return r.stdout


def shell_env(cwd_project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IVM_", "_IVM"))}
    env["PATH"] = f"{IVM_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env["HOME"] = str(cwd_project)  # no user rc files
    return env


def needs(shell: str) -> str:
    path = shutil.which(shell)
    if path is None:
        pytest.skip(f"{shell} is not installed")
    if not (IVM_BIN / "ivm").exists():
        pytest.skip("the ivm console script is not installed beside this Python")
    return path


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    """A project whose machines are only folders: what completion falls back to."""
    root = tmp_path / "proj"
    for name in ("web1", "web2", "db1", "Bad Name"):
        (root / "machines" / name).mkdir(parents=True)
    (root / "flake.nix").write_text("{ outputs = _: { }; }\n")
    return root


def bash(folders: Path, line: str) -> list[str]:
    """bash's programmable completion: the function `complete -p ivm` names, with COMP_* set."""
    words = line.split(" ")
    program = (
        f"{script('bash')}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        "fn=$(complete -p ivm | sed -E 's/.*-F ([^ ]+) .*/\\1/')\n"
        '"$fn" ivm "${COMP_WORDS[COMP_CWORD]}"; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    r = subprocess.run(
        [needs("bash"), "--norc", "--noprofile", "-c", program],
        capture_output=True, text=True, cwd=folders, env=shell_env(folders), check=True,
    )  # fmt: skip
    return r.stdout.split()


def fish(folders: Path, line: str) -> list[str]:
    """fish's own `complete -C`, after sourcing the script."""
    program = f"{script('fish')}\ncomplete -C {line!r}\n"
    r = subprocess.run(
        [needs("fish"), "--no-config", "-c", program],
        capture_output=True, text=True, cwd=folders, env=shell_env(folders), check=True,
    )  # fmt: skip
    return [row.split("\t")[0] for row in r.stdout.splitlines()]


def zsh(folders: Path, line: str) -> list[str]:
    """zsh: the script's completion function run with `words`/`CURRENT` as the completion system
    sets them; compadd and _describe (builtins of a live completion widget) record what is offered."""
    words = line.split(" ")
    program = (
        "autoload -Uz compinit && compinit -u -D\n"
        f"{script('zsh')}\n"
        "offered=()\n"
        'compadd() { local a; for a in "${(@P)${@[-1]}}"; do offered+=("$a"); done }\n'
        '_describe() { local a; for a in "${(@P)3}"; do offered+=("${a%%:*}"); done }\n'
        f"words=({' '.join(repr(w) for w in words)}); CURRENT={len(words)}\n"
        '_ivm_completion; print -l -- "${offered[@]}"\n'
    )
    r = subprocess.run(
        [needs("zsh"), "-f", "-c", program],
        capture_output=True, text=True, cwd=folders, env=shell_env(folders), check=True,
    )  # fmt: skip
    return r.stdout.split()


SHELLS = {"bash": bash, "zsh": zsh, "fish": fish}


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_commands_options_and_machine_names(shell: str, folders: Path) -> None:
    complete = SHELLS[shell]
    assert {"start", "status", "stop", "ssh", "ssh-config"} <= set(complete(folders, "ivm s"))
    assert "create" not in complete(folders, "ivm s")
    assert {"--json", "--no-eval", "--image"} <= set(complete(folders, "ivm status --"))
    assert sorted(complete(folders, "ivm start w")) == ["web1", "web2"]
    assert sorted(complete(folders, "ivm upgrade web1 ")) == ["db1", "web1", "web2"]  # not "Bad Name"


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_machine_names_come_from_the_machines_file_when_given(
    shell: str, folders: Path, tmp_path: Path
) -> None:
    machines = tmp_path / "machines.json"
    Project(folders, machines).write_machines({"wiki": machine_entry(), "db9": machine_entry()})
    names = SHELLS[shell](folders, f"ivm --machines {machines} start ")
    assert sorted(names) == ["db9", "wiki"]


def test_a_broken_machines_file_completes_nothing_and_prints_no_error(folders: Path, tmp_path: Path) -> None:
    broken = tmp_path / "machines.json"
    broken.write_text("{not json")
    assert bash(folders, f"ivm --machines {broken} start ") == []


def test_completion_needs_a_known_shell(run_cli: RunCli) -> None:
    assert run_cli("completion", "tcsh").exit_code == 2
    r = run_cli("completion", "bash")
    assert r.exit_code == 0 and "_IVM_COMPLETE=bash_complete" in r.stdout
