"""The `ivm` command line: parse, call the core, print. Errors are caught once, in main()."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ivm import __version__
from ivm.config import Settings
from ivm.errors import Exit, ToolError
from ivm.hypervisor.storage import Progress
from ivm.identity.disk import build_identity_disk
from ivm.identity.source import load_identity
from ivm.image import image_file, inspect, nix_build
from ivm.names import check_vm_name
from ivm.ops import define as define_ops
from ivm.ops import destroy as destroy_ops
from ivm.ops import gc as gc_ops
from ivm.ops import power, provision
from ivm.ops import ssh as ssh_ops
from ivm.ops import status as status_ops
from ivm.ops import upgrade as upgrade_ops
from ivm.ops.session import vm_session
from ivm.run import find_tool

log = logging.getLogger("ivm")
IMAGE_OPTION = click.option(
    "--image",
    type=click.Path(path_type=Path),
    help="Use this disk image (qcow2, or raw with a partition table) instead of building it.",
)
NAME = click.argument("name", metavar="NAME")


class _Group(click.Group):
    """Turns every failure into one line on stderr and an exit code: 0 ok, 1 failed, 2 invalid
    input. A traceback is shown only with --debug (a bug still gets one readable line)."""

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
                traceback.print_exc()
            click.echo(
                f"ivm: internal error: {type(e).__name__}: {e} (run with --debug for details)", err=True
            )
            ctx.exit(Exit.FAILED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--machines",
    "machines_file",
    type=click.Path(path_type=Path),
    envvar="IVM_MACHINES",
    help="machines.json made by the flake (env IVM_MACHINES; the flake apps pass it).",
)
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="IVM_ROOT",
    help="Project folder holding machines/<name>/ (default: nearest flake.nix upwards).",
)
@click.option("--flake", envvar="IVM_FLAKE", help="Flake to build images from (default: the project folder).")
@click.option(
    "--connect",
    "-c",
    "connect",
    metavar="URI",
    help="libvirt URI; beats the machine's libvirt_uri and LIBVIRT_URI (default qemu:///system).",
)
@click.option(
    "--virt-type",
    type=click.Choice(["kvm", "qemu"]),
    envvar="IVM_VIRT_TYPE",
    help="Domain type; default kvm where hardware virtualisation works, else qemu.",
)
@click.option("--debug", is_flag=True, envvar="IVM_DEBUG", help="Log every step; show tracebacks.")
@click.version_option(__version__, prog_name="ivm")
@click.pass_context
def cli(
    ctx: click.Context,
    machines_file: Path | None,
    root: Path | None,
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

    Environment: LIBVIRT_URI, IVM_POOL (pool name, default ivm), IVM_POOL_PATH, OVMF_CODE and
    OVMF_VARS (explicit firmware), NIX (the nix command). Exit codes: 0 ok, 1 failed, 2 bad input.
    """
    _setup_logging(debug)
    ctx.obj = Settings.from_env(
        machines_file=machines_file, root=root, flake=flake, connect=connect, virt_type=virt_type
    )


@cli.command()
@NAME
@click.pass_obj
def build(settings: Settings, name: str) -> None:
    """Build NAME's base image with Nix and print its path and base hash."""
    check_vm_name(name)
    machine = settings.machine(name)
    image = inspect(image_file(nix_build(settings.flake_ref(), machine.image_attr, settings.nix)))
    click.echo(f"{image.path}\tbase-{image.hash}")


@cli.command()
@NAME
@IMAGE_OPTION
@click.pass_obj
def create(settings: Settings, name: str, image: Path | None) -> None:
    """Create NAME's disks: import the base if new, make the boot overlay, var and identity disks.

    Missing identity files (machine-id, hostname, SSH host key) are generated in machines/NAME/.
    Running it again finishes an interrupted run; on a complete VM it changes nothing.
    """
    with vm_session(settings, name) as s:
        _print_create(provision.create(s, image, _progress))


@cli.command()
@NAME
@click.pass_obj
def define(settings: Settings, name: str) -> None:
    """Define (or update) NAME's libvirt domain; it takes effect at the next boot."""
    with vm_session(settings, name) as s:
        _print_define(define_ops.define(s))


@cli.command()
@NAME
@IMAGE_OPTION
@click.pass_obj
def xml(settings: Settings, name: str, image: Path | None) -> None:
    """Print the domain XML that `define` would use."""
    with vm_session(settings, name) as s:
        click.echo(define_ops.render_xml(s, image), nl=False)


@cli.command()
@NAME
@click.pass_obj
def start(settings: Settings, name: str) -> None:
    """Start NAME."""
    with vm_session(settings, name) as s:
        click.echo(f"{name}: started" if power.start(s) else f"{name}: already running")


@cli.command()
@NAME
@IMAGE_OPTION
@click.pass_obj
def up(settings: Settings, name: str, image: Path | None) -> None:
    """Build, create, define and start NAME: the one command for a new VM. Safe to repeat."""
    with vm_session(settings, name) as s:
        _print_create(provision.create(s, image, _progress))
        _print_define(define_ops.define(s))
        click.echo(f"{name}: started" if power.start(s) else f"{name}: already running")


@cli.command()
@NAME
@click.option("--force", is_flag=True, help="Power off if the guest has not shut down in time.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=60,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for a graceful shutdown.",
)
@click.pass_obj
def stop(settings: Settings, name: str, force: bool, timeout: float) -> None:
    """Shut NAME down (ACPI power button), waiting up to --timeout seconds."""
    with vm_session(settings, name) as s:
        how = power.stop(s, force, timeout)
    click.echo(
        {
            "already": f"{name}: already stopped",
            "shutdown": f"{name}: stopped",
            "forced": f"{name}: powered off (forced)",
        }[how]
    )


@cli.command()
@NAME
@click.option("--delete-data", is_flag=True, help="Also delete the var disk: all of NAME's data.")
@click.option("--force", is_flag=True, help="Power NAME off first if it is running.")
@click.pass_obj
def destroy(settings: Settings, name: str, delete_data: bool, force: bool) -> None:
    """Undefine NAME and delete its boot and identity disks. The var disk is kept unless
    --delete-data is given, so `ivm create NAME` later brings the VM back with its data."""
    with vm_session(settings, name) as s:
        r = destroy_ops.destroy(s, delete_data, force)
    parts = (["undefined"] if r.undefined else []) + [f"deleted {v}" for v in r.deleted]
    click.echo(f"{name}: {', '.join(parts) if parts else 'nothing to destroy'}")
    if r.kept_var:
        click.echo(f"{name}: kept its data on {r.kept_var} (delete it with --delete-data)")


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def list_(settings: Settings, as_json: bool) -> None:
    """List every machine with its state and base."""
    _print_status(status_ops.status(settings), as_json, detail=False)


@cli.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@IMAGE_OPTION
@click.option("--no-eval", is_flag=True, help="Do not evaluate the flake to find the current build.")
@click.pass_obj
def status(
    settings: Settings, names: tuple[str, ...], as_json: bool, image: Path | None, no_eval: bool
) -> None:
    """Show state, base, disks and var usage of the named machines (default: all), and drift: whether
    each runs an older base than the current build (--image's, else the flake's by `nix eval`, else
    the newest base in the pool that a VM of the same image runs)."""
    rows = status_ops.status(settings, names, image=image, evaluate=not no_eval)
    _print_status(rows, as_json, detail=True)


@cli.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--all", "all_vms", is_flag=True, help="Every machine that has been created.")
@IMAGE_OPTION
@click.option("--force", is_flag=True, help="Power a VM off if it has not shut down in time.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=120,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for each graceful shutdown.",
)
@click.pass_obj
def upgrade(
    settings: Settings, names: tuple[str, ...], all_vms: bool, image: Path | None, force: bool, timeout: float
) -> None:
    """Move VMs to the current build, keeping their /var.

    For each VM: import the new base if it is new, shut the VM down, make a fresh boot overlay on
    the new base, rebuild the identity disk from machines/NAME/, redefine, and start it again if it
    was running. A VM already on the current base with an unchanged identity is left alone. One
    VM's failure does not stop the others; the exit code is 1 if any failed.
    """
    if bool(names) == all_vms:
        raise click.UsageError("name the VMs to upgrade, or pass --all")
    result = upgrade_ops.upgrade_fleet(
        settings,
        names,
        all_created=all_vms,
        image=image,
        force=force,
        timeout=timeout,
        report=click.echo,
        progress=_progress,
    )
    click.echo(result.summary())
    if result.failures:
        total = len(result.results) + len(result.failures)
        raise ToolError(
            f"{len(result.failures)} of {total} VMs failed to upgrade",
            "fix what each line above says, then run the same command again",
        )


@cli.command()
@NAME
@click.option("--force", is_flag=True, help="Power the VM off if it has not shut down in time.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=120,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for a graceful shutdown.",
)
@click.pass_obj
def rollback(settings: Settings, name: str, force: bool, timeout: float) -> None:
    """Put NAME back on the base it ran before its last upgrade (its /var is kept). Running it again
    goes forward again: the two bases swap places."""
    with vm_session(settings, name) as s:
        click.echo(
            upgrade_ops.move_to_base(s, upgrade_ops.previous_base(s), force=force, timeout=timeout).line()
        )


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted.")
@click.pass_obj
def gc(settings: Settings, dry_run: bool) -> None:
    """Delete base images that no VM uses, on every hypervisor the machines name.

    A base is kept while any domain (running or not) or any volume in the pool refers to it,
    including each VM's previous base, which `rollback` needs.
    """
    for r in gc_ops.gc(settings, dry_run):
        verb = "would delete" if dry_run else "deleted"
        for name in r.deleted:
            click.echo(f"{r.uri}: {verb} {name}")
        for name in r.busy:
            click.echo(f"{r.uri}: skipped {name} (being imported right now)")
        click.echo(f"{r.uri}: {len(r.kept)} base(s) in use, {len(r.deleted)} {verb}")


@cli.command(context_settings={"ignore_unknown_options": True})
@NAME
@click.option("--user", "-l", default="admin", show_default=True, help="User to log in as.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def ssh(settings: Settings, name: str, user: str, command: tuple[str, ...]) -> None:
    """Log in to NAME with ssh, trusting only its identity host key (strict checking, no prompt).

    The address comes from libvirt's DHCP leases or the guest agent. Anything after `--` is the
    remote command: ivm ssh web1 -- uptime
    """
    argv = ssh_ops.prepare_ssh(settings, name, user, command)
    os.execv(argv[0], argv)  # noqa: S606 -- hand the terminal to ssh


@cli.command()
@NAME
@click.pass_obj
def console(settings: Settings, name: str) -> None:
    """Attach to NAME's serial console (leave with Ctrl-]). Runs `virsh console`."""
    check_vm_name(name)
    uri = settings.uri_for(settings.machine(name))
    virsh = find_tool("virsh", "the libvirt client (Debian: libvirt-clients)")
    os.execv(virsh, ["virsh", "-c", uri, "console", name])  # noqa: S606 -- hand the terminal to virsh


@cli.command("identity-disk")
@click.argument("source", type=click.Path(path_type=Path, file_okay=False))
@click.argument("output", type=click.Path(path_type=Path, dir_okay=False))
def identity_disk(source: Path, output: Path) -> None:
    """Write the identity disk image for the identity files in SOURCE (plumbing, used by tests).

    SOURCE must hold a complete identity (machine-id, hostname, ssh_host_ed25519_key and .pub);
    every file is validated as `create` does. OUTPUT is a raw ext4 image, mode 0600.
    """
    build_identity_disk(load_identity(source, generate=False), output)
    click.echo(str(output))


def _print_create(r: provision.CreateResult) -> None:
    for name in r.generated:
        click.echo(f"{r.name}: generated {name}")
    if r.already_existed:
        click.echo(f"{r.name}: already created on base {r.base[:12]}; nothing to do")
        return
    for vol in r.created:
        click.echo(f"{r.name}: created {vol}")
    for vol in r.kept:
        click.echo(f"{r.name}: kept {vol}")
    click.echo(f"{r.name}: ready on base {r.base[:12]}")


def _print_define(r: define_ops.DefineResult) -> None:
    if not r.changed:
        click.echo(f"{r.name}: definition unchanged")
    elif r.was_defined:
        note = " (applies at the next boot)" if r.running else ""
        click.echo(f"{r.name}: definition updated{note}")
    else:
        click.echo(f"{r.name}: defined")


def _print_status(rows: list[status_ops.VmStatus], as_json: bool, detail: bool) -> None:
    if as_json:
        click.echo(json.dumps([r.as_json() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no machines")
        return
    width = max(len(r.name) for r in rows)
    for r in rows:
        base = r.base[:12] if r.base else "-"
        line = f"{r.name:<{width}}  {r.state:<20}  base {base}"
        if detail:
            disks = " ".join(f"{v}{'' if ok else ' (missing)'}" for v, ok in r.volumes.items())
            used = _size(r.var_used_bytes) if r.var_used_bytes is not None else "-"
            total = _size(r.var_size_bytes) if r.var_size_bytes is not None else "-"
            line += f"  var {used}/{total}  {r.uri}\n{'':<{width}}  {disks}"
        click.echo(line)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n //= 1024
    return f"{n} TiB"


@contextmanager
def _progress(label: str, total: int) -> Iterator[Progress]:
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


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"ivm: {record.getMessage()}"


def _setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _Formatter() if not debug else logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    )
    root = logging.getLogger("ivm")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False


def main() -> None:
    """Entry point of the `ivm` console script."""
    cli.main(prog_name="ivm")


def _report(e: ToolError, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    hint = f"; {e.hint}" if e.hint else ""
    click.echo(f"ivm: error: {e.message}{hint}", err=True)
