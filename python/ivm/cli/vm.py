"""Commands on one VM: build, create, define, xml, start, up, stop, destroy, console, identity-disk."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ivm.cli import output
from ivm.cli.group import cli
from ivm.cli.many import many_vms, run_each
from ivm.cli.options import HOST_CA_OPTION, IMAGE_OPTION, NAME, shutdown_options
from ivm.config import Settings
from ivm.identity.disk import build_identity_disk
from ivm.identity.source import load_identity
from ivm.names import check_vm_name
from ivm.ops import define as define_ops
from ivm.ops import destroy as destroy_ops
from ivm.ops import power, provision
from ivm.ops.session import VmSession, vm_session
from ivm.run import find_tool


@cli.command()
@NAME
@click.pass_obj
def build(settings: Settings, name: str) -> None:
    """Build NAME's base image with Nix and print its path and base hash."""
    image = provision.resolve_image(settings, settings.machine(check_vm_name(name)), None)
    click.echo(f"{image.path}\tbase-{image.hash}")


@cli.command()
@many_vms
@IMAGE_OPTION
@HOST_CA_OPTION
@click.pass_obj
def create(settings: Settings, names: tuple[str, ...], all_vms: bool, jobs: int, image: Path | None) -> None:
    """Create each VM's disks: import the base if new, make the boot overlay, var and identity disks.

    Missing identity files (machine-id, hostname, SSH host key) are generated in machines/NAME/.
    Running it again finishes an interrupted run; on a complete VM it changes nothing. Several
    names or --all: up to --jobs at a time, a summary, exit 1 if any failed.
    """
    bar = output.progress if jobs == 1 else None
    run_each(
        settings,
        names,
        all_vms,
        jobs,
        lambda s: provision.create(s, image, bar),
        lambda r: output.print_create(r, image),
        "created",
    )


@cli.command()
@many_vms
@click.pass_obj
def define(settings: Settings, names: tuple[str, ...], all_vms: bool, jobs: int) -> None:
    """Define (or update) each VM's libvirt domain; it takes effect at the next boot."""
    run_each(settings, names, all_vms, jobs, define_ops.define, output.print_define, "defined")


@cli.command()
@NAME
@IMAGE_OPTION
@click.pass_obj
def xml(settings: Settings, name: str, image: Path | None) -> None:
    """Print the domain XML that `define` would use, writing nothing.

    Before `create` it cannot know the domain UUID and the MAC address (both derive from
    machines/NAME/machine-id, which `create` generates): they are left out, and a comment on the
    first line says so. The base is the created VM's, else --image's, else the flake's (built).
    """
    with vm_session(settings, name) as s:
        click.echo(define_ops.render_xml(s, image), nl=False)


@cli.command()
@NAME
@click.pass_obj
def start(settings: Settings, name: str) -> None:
    """Start NAME. On a local pool the owner and mode of its read-only disks are repaired first."""
    with vm_session(settings, name) as s:
        click.echo(f"{name}: started" if power.start(s) else f"{name}: already running")


@cli.command()
@many_vms
@IMAGE_OPTION
@HOST_CA_OPTION
@click.pass_obj
def up(settings: Settings, names: tuple[str, ...], all_vms: bool, jobs: int, image: Path | None) -> None:
    """Build, create, define and start each VM: the one command for new VMs. Safe to repeat."""
    bar = output.progress if jobs == 1 else None

    def job(s: VmSession) -> tuple[provision.CreateResult, define_ops.DefineResult, bool]:
        return provision.create(s, image, bar), define_ops.define(s), power.start(s)

    def show(r: tuple[provision.CreateResult, define_ops.DefineResult, bool]) -> None:
        output.print_create(r[0], image)
        output.print_define(r[1])
        click.echo(f"{r[0].name}: started" if r[2] else f"{r[0].name}: already running")

    run_each(settings, names, all_vms, jobs, job, show, "up")


@cli.command()
@NAME
@shutdown_options(60)
@click.pass_obj
def stop(settings: Settings, name: str, force: bool, timeout: float) -> None:
    """Shut NAME down (ACPI power button), waiting up to --timeout seconds; then give its read-only
    disks back to the pool's owner (libvirt leaves them to the VM's QEMU uid)."""
    with vm_session(settings, name) as s:
        how = power.stop(s, force, timeout)
    click.echo(
        {
            power.Stopped.ALREADY: f"{name}: already stopped",
            power.Stopped.SHUTDOWN: f"{name}: stopped",
            power.Stopped.FORCED: f"{name}: powered off (forced)",
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


@cli.command()
@NAME
@click.pass_obj
def console(settings: Settings, name: str) -> None:
    """Attach to NAME's serial console (leave with Ctrl-]). Runs `virsh console`."""
    check_vm_name(name)
    uri = settings.uri_for(settings.machine(name))
    virsh = find_tool("virsh", "the libvirt client (Debian: libvirt-clients)")
    power.check_console(settings, name, uri)  # ivm's own one-line errors, before virsh takes over
    os.execv(virsh, ["virsh", "-c", uri, "console", name])  # noqa: S606 -- hand the terminal to virsh


@cli.command("identity-disk")
@click.argument("source", type=click.Path(path_type=Path, file_okay=False))
@click.argument("output", type=click.Path(path_type=Path, dir_okay=False))
def identity_disk(source: Path, output: Path) -> None:
    """Write the identity disk image for the identity files in SOURCE (plumbing, used by tests).

    SOURCE must hold a complete identity (machine-id, hostname, ssh_host_ed25519_key and .pub);
    every file is validated as `create` does. OUTPUT is a raw ext4 image, mode 0600, written as a
    new file renamed over OUTPUT (a symlink there is replaced, never followed).
    """
    build_identity_disk(load_identity(source, generate=False), output)
    click.echo(str(output))
