"""The `ivm` command group: global options, logging, and the one place errors become exit codes."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

import ivm
from ivm.cli.commands import COMMANDS
from ivm.errors import Exit, ToolError


class _Group(click.Group):
    """Turns every failure into one line on stderr and an exit code: 0 ok, 1 failed, 2 invalid
    input. A traceback is shown only with --debug (a bug still gets one readable line).

    Commands are imported when named (ivm/cli/commands.py), so --help, --version and a usage
    error start as fast as click itself."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(COMMANDS[cmd_name].module)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's command list, from the table for commands not imported yet."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        rows = []
        for name in names:
            cmd = self.commands.get(name) or click.Command(name, help=COMMANDS[name].help)
            if not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        # click's own usage errors print a usage block; ivm says one line like its other errors.
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as e:
            click.echo(_short_usage(e.ctx), err=True)
            sys.exit(Exit.USAGE)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx else "ivm"
            click.echo(f"ivm: error: {e.format_message().rstrip('.')}; see '{where} --help'", err=True)
            sys.exit(Exit.USAGE)
        except click.ClickException as e:
            click.echo(f"ivm: error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            click.echo("ivm: aborted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else Exit.OK)

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except ToolError as e:
            _report(e, debug)
            ctx.exit(e.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("ivm: interrupted; run the same command again to finish", err=True)
            ctx.exit(130)
        except Exception as e:
            if debug:
                import traceback  # noqa: PLC0415 -- only a failure needs it

                traceback.print_exc()
            click.echo(
                f"ivm: internal error: {type(e).__name__}: {e} (run with --debug for details)", err=True
            )
            ctx.exit(Exit.FAILED)


@click.group(
    name="ivm", cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.option(
    "--machines",
    "machines_file",
    type=click.Path(),  # a str: pathlib costs --help ~10 ms, so the callback makes the Path
    envvar="IVM_MACHINES",
    help="machines.json made by the flake (env IVM_MACHINES; the flake apps pass it).",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    envvar="IVM_ROOT",
    help="Project folder holding machines/<name>/ (default: nearest flake.nix upwards).",
)
@click.option("--flake", envvar="IVM_FLAKE", help="Flake to build images from (default: the project folder).")
@click.option(
    "--connect",
    "-c",
    "connect",
    metavar="URI",
    help="libvirt URI; beats the machine's libvirt_uri, LIBVIRT_URI and LIBVIRT_DEFAULT_URI "
    "(default qemu:///system). Only local, ssh and tls URIs are accepted; ext and tcp are refused.",
)
@click.option(
    "--virt-type",
    type=click.Choice(["kvm", "qemu"]),
    envvar="IVM_VIRT_TYPE",
    help="Domain type; default kvm where hardware virtualisation works, else qemu.",
)
@click.option("--debug", is_flag=True, envvar="IVM_DEBUG", help="Log every step; show tracebacks.")
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, _param, value: _show_version(ctx, value),
    help="Show the version and exit.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    machines_file: str | None,
    root: str | None,
    flake: str | None,
    connect: str | None,
    virt_type: str | None,
    debug: bool,
) -> None:
    """Run many libvirt VMs from one immutable NixOS base image.

    Each VM gets a read-only copy-on-write overlay of the shared base, its own /var disk and a
    small identity disk (machine-id, SSH host key, network and firewall settings) made from
    machines/NAME/ in the project. The var disk is never overwritten, and deleted only by
    `destroy --delete-data`.

    \b
    First run:   ivm up web1            (build, create, define, start)
    Step by step: ivm create web1; ivm define web1; ivm start web1

    Environment: LIBVIRT_URI, else LIBVIRT_DEFAULT_URI; IVM_POOL (pool name, default ivm),
    IVM_POOL_PATH, OVMF_CODE and OVMF_VARS (explicit firmware), NIX (the nix command), IVM_HOST_CA
    (an SSH host CA key: host keys are signed, ssh trusts the CA; --host-ca). Run as root in
    another user's project, Nix runs as that user and generated files are given to them.
    Exit codes: 0 ok, 1 failed, 2 bad input.
    """
    from pathlib import Path  # noqa: PLC0415 -- only a command needs these (and lxml with them)

    from ivm.config import Settings  # noqa: PLC0415

    _setup_logging(debug)
    ctx.obj = Settings.from_env(
        machines_file=None if machines_file is None else Path(machines_file),
        root=None if root is None else Path(root),
        flake=flake,
        connect=connect,
        virt_type=virt_type,
    )


def _short_usage(ctx: click.Context | None) -> str:
    """What a bare `ivm` (or `ivm pool`) prints: its usage line and commands, not the whole help."""
    if ctx is None or not isinstance(ctx.command, click.Group):
        return "Usage: ivm [OPTIONS] COMMAND [ARGS]...; see 'ivm --help'"
    names = ", ".join(ctx.command.list_commands(ctx))
    first = (
        "\nStart with: ivm up NAME (builds with Nix), or ivm up NAME --image FILE"
        if ctx.parent is None
        else ""
    )
    where = ctx.command_path
    return f"{ctx.get_usage()}\nCommands: {names}{first}\nSee '{where} --help', or '{where} COMMAND --help'."


def _show_version(ctx: click.Context, value: bool) -> None:
    # Not click.version_option: it wants the version when the CLI is built, i.e. on every run.
    if value and not ctx.resilient_parsing:
        click.echo(f"ivm, version {ivm.__version__}")
        ctx.exit()


def _report(e: ToolError, debug: bool) -> None:
    if debug:
        import traceback  # noqa: PLC0415

        traceback.print_exc()
    hint = f"; {e.hint}" if e.hint else ""
    click.echo(f"ivm: error: {e.message}{hint}", err=True)


def _setup_logging(debug: bool) -> None:
    import logging  # noqa: PLC0415 -- a command's first need; --help has none

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("ivm: %(message)s")
        if not debug
        else logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    )
    root = logging.getLogger("ivm")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False
