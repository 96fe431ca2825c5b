"""Options and arguments that several commands share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ivm.cli.complete import machine_names

F = TypeVar("F", bound=Callable[..., Any])
IMAGE_OPTION = click.option(
    "--image",
    type=click.Path(path_type=Path),
    help="Use this disk image (qcow2, or raw with a partition table) instead of building it.",
)
NAME = click.argument("name", metavar="NAME", shell_complete=machine_names)
NAMES = click.argument("names", nargs=-1, metavar="[NAME]...", shell_complete=machine_names)


def shutdown_options(default_timeout: float) -> Callable[[F], F]:
    """--force and --timeout, shared by every command that shuts a VM down."""

    def apply(f: F) -> F:
        f = click.option(
            "--timeout",
            type=click.FloatRange(min=0),
            default=default_timeout,
            show_default=True,
            metavar="SECONDS",
            help="How long to wait for a graceful shutdown (ACPI power button).",
        )(f)
        return click.option(
            "--force", is_flag=True, help="Power the VM off if it has not shut down in time."
        )(f)

    return apply
