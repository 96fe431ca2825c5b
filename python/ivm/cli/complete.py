"""Shell completion of machine names: from machines.json if one is named, else machines/ folders."""

from __future__ import annotations

import os
from pathlib import Path

import click
from click.shell_completion import CompletionItem

from ivm.config import find_root
from ivm.errors import ToolError
from ivm.machines import load_machines
from ivm.names import check_vm_name


def machine_names(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The machines a NAME argument may take. Completion must never fail or print: any problem
    (no project, a broken machines.json) completes nothing."""
    root = ctx.find_root().params
    try:
        # The group keeps these as text (no pathlib at start-up).
        machines_file, project = root.get("machines_file"), root.get("root")
        names = _names(Path(machines_file) if machines_file else None, Path(project) if project else None)
    except (OSError, ToolError, ValueError):
        return []
    return [CompletionItem(n) for n in sorted(names) if n.startswith(incomplete)]


def _names(machines_file: Path | None, root: Path | None) -> list[str]:
    given = machines_file or (Path(os.environ["IVM_MACHINES"]) if os.environ.get("IVM_MACHINES") else None)
    if given is not None:
        return list(load_machines(given))
    project = root or (Path(os.environ["IVM_ROOT"]) if os.environ.get("IVM_ROOT") else find_root(Path.cwd()))
    if project is None or not (project / "machines").is_dir():
        return []
    return [p.name for p in (project / "machines").iterdir() if p.is_dir() and _valid(p.name)]


def _valid(name: str) -> bool:
    try:
        check_vm_name(name)
    except ToolError:
        return False
    return True
