"""Commands on the fleet: list, status, plan, apply, upgrade, rollback, snapshots, gc, ssh, ssh-config."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import click

from ivm.cli import output
from ivm.cli.group import cli
from ivm.cli.many import JOBS_OPTION
from ivm.cli.options import HOST_CA_OPTION, IMAGE_OPTION, NAME, NAMES, shutdown_options
from ivm.config import Settings
from ivm.errors import ToolError
from ivm.hypervisor.domains import require
from ivm.ops import apply as apply_ops
from ivm.ops import gc as gc_ops
from ivm.ops import observe
from ivm.ops import snapshots as snapshot_ops
from ivm.ops import ssh as ssh_ops
from ivm.ops import ssh_config as ssh_config_ops
from ivm.ops import status as status_ops
from ivm.ops import upgrade as upgrade_ops
from ivm.ops.session import vm_session


@cli.command("list")
@click.option(
    "--json", "as_json", is_flag=True, help="Machine-readable output (docs/operations.md lists its fields)."
)
@click.pass_obj
def list_(settings: Settings, as_json: bool) -> None:
    """List every machine with its state and base. Exit code 1 if any hypervisor could not be
    reached (the machines on the others are still listed).

    Quick: no `nix eval` (`status` says whether each VM runs the current build), and one libvirt
    answer per VM (`status` also reads the var disk's use and the disks' ownership).
    """
    rows = status_ops.status(settings, evaluate=False, detail=False)
    output.print_status(rows, as_json, detail=False)
    status_ops.require_reachable(rows)


@cli.command()
@NAMES
@click.option(
    "--json", "as_json", is_flag=True, help="Machine-readable output (docs/operations.md lists its fields)."
)
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
@click.option("--all", "all_vms", is_flag=True, help="Every machine; also list orphaned domains.")
@click.option(
    "--json", "as_json", is_flag=True, help="Machine-readable output (docs/operations.md lists its fields)."
)
@IMAGE_OPTION
@click.option("--no-eval", is_flag=True, help="Do not evaluate the flake to find the current build.")
@HOST_CA_OPTION
@click.pass_context
def plan(
    ctx: click.Context,
    names: tuple[str, ...],
    all_vms: bool,
    as_json: bool,
    image: Path | None,
    no_eval: bool,
) -> None:
    """Show what `apply` would do to each VM, changing nothing.

    Compares machines.json, the current build (--image's, else the flake's by `nix eval`) and the
    identity files in machines/NAME/ with what each hypervisor has. Actions per VM: create,
    import-base, upgrade, identity, define, redefine (a semantic comparison: what libvirt adds is
    ignored), start. With --all, domains ivm defined in this pool whose machine is gone are listed
    as orphans; nothing ever touches them unless asked.

    Exit codes: 0 no changes, 3 changes pending, 1 a VM could not be planned, 2 invalid input.
    """
    result = observe.plan(ctx.obj, names, all_vms, image, evaluate=not no_eval)
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
    else:
        for vm in result.vms:
            click.echo(vm.line())
        for o in result.orphans:
            state = "running" if o.running else "shut off"
            click.echo(f"{o.name}: orphan on {o.uri} ({state}; its machine is gone), left alone")
        click.echo(result.summary())
    ctx.exit(result.exit_code())


@cli.command()
@NAMES
@click.option("--all", "all_vms", is_flag=True, help="Every machine.")
@JOBS_OPTION
@IMAGE_OPTION
@click.option("--no-eval", is_flag=True, help="Do not evaluate the flake to find the current build.")
@click.option(
    "--prune",
    is_flag=True,
    help="With --all: also destroy the orphans (undefine, delete boot and identity disks, keep /var).",
)
@shutdown_options(120)
@HOST_CA_OPTION
@click.pass_obj
def apply(
    settings: Settings,
    names: tuple[str, ...],
    all_vms: bool,
    jobs: int,
    image: Path | None,
    no_eval: bool,
    prune: bool,
    force: bool,
    timeout: float,
) -> None:
    """Carry out `ivm plan`: create, import, upgrade, rebuild identities, define, start.

    Each VM is planned again under its lock, so a second `apply` (or one running at the same time)
    finds nothing left to do and restarts nothing. A VM whose definition, base and identity are
    unchanged is never restarted; one whose base, identity or definition changed is restarted if it
    was running. Orphaned domains are left alone unless --prune. One line per VM as it finishes,
    then a summary; the exit code is 1 if any VM failed.
    """
    if prune and not all_vms:
        raise click.UsageError("--prune needs --all (orphans are found among all domains)")
    opts = apply_ops.ApplyOptions(image, force, timeout, output.progress if jobs == 1 else None)
    outcomes = apply_ops.apply_fleet(
        settings,
        names,
        all_vms,
        opts,
        jobs=jobs,
        evaluate=not no_eval,
        report=lambda o: click.echo(o.result.line() if o.result else f"{o.name}: failed: {o.error}"),
    )
    failed = sum(o.error is not None for o in outcomes)
    pruning_failed = apply_ops.prune_orphans(settings, force=force, report=click.echo) if prune else 0
    changed = sum(bool(o.result and o.result.done) for o in outcomes)
    click.echo(f"{changed} changed, {len(outcomes) - changed - failed} unchanged, {failed} failed")
    if failed or pruning_failed:
        raise ToolError(
            f"{failed + pruning_failed} of {len(outcomes)} VMs (and orphans) failed to apply",
            "fix what each line above says, then run `ivm apply` again",
        )


@cli.command()
@NAMES
@click.option("--all", "all_vms", is_flag=True, help="Every machine that has been created.")
@JOBS_OPTION
@click.option(
    "--canary",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="Upgrade N VMs first and wait for them to be healthy before the rest go in batches of --jobs.",
)
@click.option(
    "--max-failures",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Stop before the next wave once this many VMs were rolled back.",
)
@click.option(
    "--health-timeout",
    type=click.FloatRange(min=0),
    default=120,
    show_default=True,
    metavar="SECONDS",
    help="How long a restarted VM has to show it is healthy; 0 skips the check.",
)
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Snapshot /var before moving a VM to a new base and keep this many per VM (0: none).",
)
@IMAGE_OPTION
@shutdown_options(120)
@HOST_CA_OPTION
@click.pass_obj
def upgrade(
    settings: Settings,
    names: tuple[str, ...],
    all_vms: bool,
    jobs: int,
    canary: int,
    max_failures: int,
    health_timeout: float,
    keep: int,
    image: Path | None,
    force: bool,
    timeout: float,
) -> None:
    """Move VMs to the current build, keeping their /var.

    For each VM: import the new base if it is new, shut the VM down, make a fresh boot overlay on
    the new base, rebuild the identity disk from machines/NAME/, redefine, and start it again if it
    was running. While a VM is stopped for a new base its /var is snapshotted (named after the base
    it ran; --keep). A VM already on the current base with an unchanged identity is left alone. Up to
    --jobs VMs at a time, a line for each as it finishes. One VM's error does not stop the others.

    A VM restarted on a new base must be healthy within --health-timeout: its QEMU guest agent
    answers (over its virtio-serial channel, no network), and the machine's health_check from
    meta.nix, if any, exits 0 in the guest. If not, it is put back on its previous base and started
    (`rolled back: ...`), and after --max-failures such VMs the run stops before the next wave.
    With --canary N the first N VMs form a wave of their own. The exit code is 1 if any VM failed
    or was rolled back.
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
        rollout=upgrade_ops.Rollout(jobs, canary, max_failures, health_timeout, keep),
    )
    click.echo(result.summary())
    if result.rolled_back:
        raise ToolError(
            f"{result.rolled_back} VM(s) were unhealthy on the new base and rolled back",
            "fix the build (or the machine's health_check), then run the same command again",
        )
    if result.failures:
        total = len(result.results) + len(result.failures)
        raise ToolError(
            f"{len(result.failures)} of {total} VMs failed to upgrade",
            "fix what each line above says, then run the same command again",
        )


@cli.command()
@NAME
@click.option("--with-data", is_flag=True, help="Also put /var back to a snapshot taken on that base.")
@click.option(
    "--snapshot",
    metavar="SNAPSHOT",
    help="With --with-data: this snapshot (see `ivm snapshots NAME`) instead of the newest on that base.",
)
@shutdown_options(120)
@HOST_CA_OPTION
@click.pass_obj
def rollback(
    settings: Settings, name: str, with_data: bool, snapshot: str | None, force: bool, timeout: float
) -> None:
    """Put NAME back on the base it ran before its last upgrade. Plain rollback keeps /var as it is;
    --with-data also restores /var to the newest snapshot taken on that base (the /var it replaces
    is snapshotted first). Running it again goes forward again: the two bases swap places."""
    if snapshot and not with_data:
        raise click.UsageError("--snapshot needs --with-data")
    with vm_session(settings, name) as s:
        if not with_data:
            click.echo(
                upgrade_ops.move_to_base(s, upgrade_ops.previous_base(s), force=force, timeout=timeout).line()
            )
            return
        result, restored, saved = upgrade_ops.rollback_with_data(s, snapshot, force=force, timeout=timeout)
    click.echo(f"{name}: /var restored from {restored} (the /var it replaced is kept as {saved})")
    click.echo(result.line())


@cli.command()
@NAME
@click.option("--keep", type=click.IntRange(min=0), metavar="N", help="Delete all but the newest N.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def snapshots(settings: Settings, name: str, keep: int | None, as_json: bool) -> None:
    """List NAME's /var snapshots, oldest first (upgrade takes one per new base; each is named after
    the base /var ran on). --keep N deletes the oldest beyond N. The live /var is never touched."""
    with vm_session(settings, name) as s:
        dom = require(s.domain(), name)
        deleted = snapshot_ops.prune(s, dom, keep) if keep is not None else []
        found = snapshot_ops.var_snapshots(s, dom)
    if as_json:
        rows = [{"name": x.name, "created": x.created, "base": snapshot_ops.base_of(x.name)} for x in found]
        click.echo(json.dumps({"snapshots": rows, "deleted": deleted}, indent=2))
        return
    for gone in deleted:
        click.echo(f"{name}: deleted {gone}")
    for x in found:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(x.created))
        click.echo(f"{x.name}  {when}  base {snapshot_ops.base_of(x.name)}")
    if not found:
        click.echo(f"{name}: no /var snapshots")


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
        for name in r.kept:
            click.echo(f"{r.uri}: keeps {name} ({r.reason(name)})")
        click.echo(f"{r.uri}: {len(r.kept)} base(s) in use, {len(r.deleted)} {verb}")


@cli.command(context_settings={"ignore_unknown_options": True})
@NAME
@click.option("--user", "-l", default="admin", show_default=True, help="User to log in as.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@HOST_CA_OPTION
@click.pass_obj
def ssh(settings: Settings, name: str, user: str, command: tuple[str, ...]) -> None:
    """Log in to NAME with ssh, trusting only its identity host key (strict checking, no prompt).

    The address comes from libvirt's DHCP leases or the guest agent; only an IP address of the
    VM's own network card is used. A machine with a user-mode NIC (network type "user") is reached
    through its forward to port 22 on 127.0.0.1. Agent, X11 and port forwarding are off whatever ~/.ssh/config
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
@HOST_CA_OPTION
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
    With a host CA (--host-ca, IVM_HOST_CA), one @cert-authority line trusts it for every VM whose
    identity holds a valid certificate from it, instead of pinning each key.
    """
    if bool(names) == all_vms:
        raise click.UsageError("name the VMs, or pass --all")
    ca = ssh_ops.host_ca(settings)
    targets, skipped = ssh_config_ops.collect(settings, names, all_vms)
    for s in skipped:
        click.echo(f"ivm: {s.name}: skipped: {s.reason}", err=True)
    if output_file is not None:
        config, keys = ssh_config_ops.render(
            targets, skipped, user, ssh_config_ops.known_hosts_for(output_file), ca
        )
        ssh_config_ops.write_config(output_file, config, keys)
        click.echo(f"wrote {len(targets)} Host block(s) to {output_file}")
        return
    _, keys = ssh_config_ops.render(targets, skipped, user, Path(), ca)
    config, _ = ssh_config_ops.render(targets, skipped, user, ssh_config_ops.stdout_known_hosts(keys), ca)
    click.echo(config, nl=False)
