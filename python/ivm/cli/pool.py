"""Commands on ivm's storage pool itself: remove it once nothing is left in it."""

from __future__ import annotations

import click

from ivm.cli.group import cli
from ivm.config import Settings
from ivm.ops.session import open_hypervisor


@cli.group()
def pool() -> None:
    """ivm's storage pool (IVM_POOL, default ivm) on the hypervisor --connect names."""


@pool.command("remove")
@click.pass_obj
def remove(settings: Settings) -> None:
    """Remove ivm's pool and its directory, if it holds no volume (no VM disks, no bases).

    Destroy the VMs with `ivm destroy NAME --delete-data` and run `ivm gc` first. The pool is made
    again by the next `ivm create`.
    """
    uri = settings.uri_for(None)
    with open_hypervisor(settings, uri) as hv:
        removed = hv.storage.remove_if_empty()
    where = f"{settings.pool} ({hv.storage.path}) on {uri}"
    click.echo(f"removed storage pool {where}" if removed else f"no storage pool {where}: nothing to do")
