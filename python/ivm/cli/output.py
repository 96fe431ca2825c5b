"""What the commands print: result lines, status tables, progress bars."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from ivm.hypervisor.storage import Progress
from ivm.ops import define as define_ops
from ivm.ops import provision
from ivm.ops import status as status_ops


def print_create(r: provision.CreateResult, image: Path | None = None) -> None:
    for name in r.generated:
        click.echo(f"{r.name}: generated {name}")
    if r.asked:
        click.echo(
            f"{r.name}: runs base {r.base[:12]}, not --image's base {r.asked[:12]}; left as it is. "
            f"Move it there (its /var is kept) with: ivm upgrade {r.name} --image {image}"
        )
        return
    if r.already_existed:
        click.echo(f"{r.name}: already created on base {r.base[:12]}; nothing to do")
        return
    for vol in r.created:
        click.echo(f"{r.name}: created {vol}")
    for vol in r.kept:
        click.echo(f"{r.name}: kept {vol}")
    click.echo(f"{r.name}: ready on base {r.base[:12]}")


def print_define(r: define_ops.DefineResult) -> None:
    if not r.changed:
        click.echo(f"{r.name}: definition unchanged")
    elif r.was_defined:
        note = " (applies at the next boot)" if r.running else ""
        click.echo(f"{r.name}: definition updated{note}")
    else:
        click.echo(f"{r.name}: defined")


def print_status(rows: list[status_ops.VmStatus], as_json: bool, detail: bool) -> None:
    if as_json:
        click.echo(json.dumps([r.as_json() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no machines")
        return
    width = max(len(r.name) for r in rows)
    for r in rows:
        base = r.base[:12] if r.base else "-"
        state = r.state if r.reachable else f"unreachable: {r.error}"
        line = f"{r.name:<{width}}  {state:<20}  base {base}"
        if detail:
            disks = " ".join(f"{v}{'' if ok else ' (missing)'}" for v, ok in r.volumes.items())
            used = _size(r.var_used_bytes) if r.var_used_bytes is not None else "-"
            total = _size(r.var_size_bytes) if r.var_size_bytes is not None else "-"
            line += f"  var {used}/{total}  {r.uri}"
            line += f"\n{'':<{width}}  {_drift(r)}; previous base {(r.previous_base or '-')[:12]}"
            line += f"\n{'':<{width}}  {disks}"
            line += "".join(f"\n{'':<{width}}  drift: {d} (`ivm start` repairs it)" for d in r.ownership)
        click.echo(line)


def _drift(r: status_ops.VmStatus) -> str:
    if r.behind is None:
        return "behind: unknown (no current build known)"
    if r.behind:
        return f"behind: yes, current build is base {(r.current_base or '-')[:12]} (ivm upgrade {r.name})"
    return "behind: no"


def _size(n: int) -> str:
    """Bytes in binary units with one decimal, rounded up: a little used never reads as 0."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{math.ceil(value * 10) / 10:.1f} {unit}"
    raise AssertionError("unreachable")


@contextmanager
def progress(label: str, total: int) -> Iterator[Progress]:
    """A progress bar on a terminal; plain silence otherwise (logs say what happens)."""
    if not sys.stderr.isatty():
        yield lambda _pos: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        seen = [0]

        def update(pos: int) -> None:
            bar.update(pos - seen[0])
            seen[0] = pos

        yield update
