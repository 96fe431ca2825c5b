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


def _host_ca(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    # The settings object is shared down the command: the option replaces IVM_HOST_CA for this run.
    if value is not None and not ctx.resilient_parsing:
        from dataclasses import replace  # noqa: PLC0415 -- only a run that names a CA needs it

        ctx.obj = replace(ctx.obj, host_ca=value)


HOST_CA_OPTION = click.option(
    "--host-ca",
    type=click.Path(path_type=Path, dir_okay=False),
    expose_value=False,
    callback=_host_ca,
    metavar="PATH",
    help="SSH host CA private key (env IVM_HOST_CA; outside the project and the Nix store, mode 600, "
    "PATH.pub beside it): host keys are signed with it, and ssh trusts it (docs/security.md).",
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
