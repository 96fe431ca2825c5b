"""Commands on the fleet: list, status, upgrade, rollback, gc, ssh, ssh-config."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import click

from ivm.cli import output
from ivm.cli.group import IMAGE_OPTION, NAME, NAMES, cli, shutdown_options
from ivm.config import Settings
from ivm.errors import ToolError
from ivm.ops import gc as gc_ops
from ivm.ops import ssh as ssh_ops
from ivm.ops import ssh_config as ssh_config_ops
from ivm.ops import status as status_ops
from ivm.ops import upgrade as upgrade_ops
from ivm.ops.session import vm_session


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def list_(settings: Settings, as_json: bool) -> None:
    """List every machine with its state and base. Exit code 1 if any hypervisor could not be
    reached (the machines on the others are still listed)."""
    rows = status_ops.status(settings)
    output.print_status(rows, as_json, detail=False)
    status_ops.require_reachable(rows)


@cli.command()
@NAMES
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@IMAGE_OPTION
@click.option("--no-eval", is_flag=True, help="Do not evaluate the flake to find the current build.")
@click.pass_obj
def status(
    settings: Settings, names: tuple[str, ...], as_json: bool, image: Path | None, no_eval: bool
) -> None:
    """Show state, base, disks and var usage of the named machines (default: all), and drift: whether
    each runs an older base than the current build (--image's, else the flake's by `nix eval`, else
    the newest base in the pool that a VM of the same image runs). On a local pool it also lists
    ownership drift of each VM's read-only disks, which `ivm start` repairs. Exit code 1 if any
    hypervisor could not be reached (the rows of the others are still printed)."""
    rows = status_ops.status(settings, names, image=image, evaluate=not no_eval)
    output.print_status(rows, as_json, detail=True)
    status_ops.require_reachable(rows)


@cli.command()
@NAMES
@click.option("--all", "all_vms", is_flag=True, help="Every machine that has been created.")
@IMAGE_OPTION
@shutdown_options(120)
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
        progress=output.progress,
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
@shutdown_options(120)
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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output, one object per hypervisor.")
@click.pass_obj
def gc(settings: Settings, dry_run: bool, as_json: bool) -> None:
    """Delete base images that no VM uses, on every hypervisor the machines name.

    A base is kept while any domain (running or not) or any volume in the pool refers to it,
    including each VM's previous base, which `rollback` needs.
    """
    results = gc_ops.gc(settings, dry_run)
    if as_json:
        click.echo(json.dumps([{**asdict(r), "dry_run": dry_run} for r in results], indent=2))
        return
    for r in results:
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

    The address comes from libvirt's DHCP leases or the guest agent; only an IP address of the
    VM's own network card is used. Agent, X11 and port forwarding are off whatever ~/.ssh/config
    says. Anything after `--` is the remote command: ivm ssh web1 -- uptime
    """
    argv = ssh_ops.prepare_ssh(settings, name, user, command)
    os.execv(argv[0], argv)  # noqa: S606 -- hand the terminal to ssh


@cli.command("ssh-config")
@NAMES
@click.option("--all", "all_vms", is_flag=True, help="Every machine; those ssh cannot reach now are skipped.")
@click.option("--user", "-l", default="admin", show_default=True, help="User to log in as.")
@click.option(
    "--output",
    "-o",
    "output_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the blocks to this file (and its pinned keys to FILE.known_hosts), each atomically.",
)
@click.pass_obj
def ssh_config(
    settings: Settings, names: tuple[str, ...], all_vms: bool, user: str, output_file: Path | None
) -> None:
    """Print OpenSSH Host blocks for the VMs, so ssh, scp, rsync, Ansible and editors reach them
    without ivm: `Include` the file from ~/.ssh/config, then `ssh web1`.

    Each block names the VM's current address (an IP of its own network card, as `ivm ssh` finds
    it), pins its identity host key in a known_hosts file with strict checking, and turns off the
    same forwarding options `ivm ssh` does. Addresses can change: run it again after a VM restarts.
    Printed to stdout, the keys go to ivm's runtime directory; with --output they go beside FILE.
    """
    if bool(names) == all_vms:
        raise click.UsageError("name the VMs, or pass --all")
    targets, skipped = ssh_config_ops.collect(settings, names, all_vms)
    for s in skipped:
        click.echo(f"ivm: {s.name}: skipped: {s.reason}", err=True)
    if output_file is not None:
        config, keys = ssh_config_ops.render(
            targets, skipped, user, ssh_config_ops.known_hosts_for(output_file)
        )
        ssh_config_ops.write_config(output_file, config, keys)
        click.echo(f"wrote {len(targets)} Host block(s) to {output_file}")
        return
    _, keys = ssh_config_ops.render(targets, skipped, user, Path())
    config, _ = ssh_config_ops.render(targets, skipped, user, ssh_config_ops.stdout_known_hosts(keys))
    click.echo(config, nl=False)
