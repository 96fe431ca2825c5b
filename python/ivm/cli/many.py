"""A command on one VM, several, or --all: the options, and the run with a line per VM and a summary.

One name runs as it always did (its error is the command's error, exit code included); several
names or --all go through ops/workers.py: up to --jobs at a time, one connection per worker and
hypervisor, each VM's lines printed together as it finishes, exit 1 if any failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from ivm.config import Settings
from ivm.errors import ToolError
from ivm.ops.observe import select
from ivm.ops.session import VmSession, vm_session
from ivm.ops.workers import Outcome, for_each_vm

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")

JOBS_OPTION = click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="How many VMs to work on at once (one libvirt connection per worker and hypervisor).",
)


def many_vms(f: F) -> F:
    """NAME... or --all, and --jobs."""
    f = JOBS_OPTION(f)
    f = click.option("--all", "all_vms", is_flag=True, help="Every machine in machines.json.")(f)
    return click.argument("names", nargs=-1, metavar="[NAME]...")(f)


def run_each(
    settings: Settings,
    names: tuple[str, ...],
    all_vms: bool,
    jobs: int,
    job: Callable[[VmSession], R],
    show: Callable[[R], None],
    verb: str,
) -> None:
    wanted = select(settings, names, all_vms)
    if len(wanted) == 1 and not all_vms:
        with vm_session(settings, wanted[0]) as s:
            show(job(s))
        return

    def report(o: Outcome[R]) -> None:
        if o.error is not None:
            click.echo(f"{o.name}: failed: {o.error}")
        else:
            show(o.result)  # type: ignore[arg-type]  # a job's result, None only on failure

    outcomes = for_each_vm(settings, wanted, job, jobs=jobs, report=report)
    failed = sum(o.error is not None for o in outcomes)
    click.echo(f"{len(outcomes) - failed} {verb}, {failed} failed")
    if failed:
        raise ToolError(
            f"{failed} of {len(outcomes)} VMs failed",
            "fix what each line above says, then run the same command again",
        )
