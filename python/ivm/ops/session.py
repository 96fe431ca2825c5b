"""A VM's working context: its machine, its hypervisor (pool and domains), its domain — and its lock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ivm.config import Settings
from ivm.errors import UsageError
from ivm.hypervisor.handles import DomainHandle
from ivm.hypervisor.host import Hypervisor, open_host
from ivm.hypervisor.uri import is_local
from ivm.lock import resource_lock
from ivm.machines import Machine, NetworkType
from ivm.names import check_vm_name
from ivm.privilege import check_uri_for_user
from ivm.volumes import VmVolumes, vm_volumes


@dataclass(frozen=True)
class VmSession:
    name: str
    machine: Machine
    settings: Settings
    hv: Hypervisor

    @property
    def volumes(self) -> VmVolumes:
        return vm_volumes(self.name)

    def domain(self) -> DomainHandle | None:
        return self.hv.domains.lookup(self.name)


def check_network_reachable(name: str, machine: Machine, uri: str) -> None:
    """A user-mode NIC's forwards listen on the hypervisor's own 127.0.0.1: on a remote hypervisor
    nothing on this machine (`ivm ssh` included) can reach them."""
    if machine.network.type is NetworkType.USER and not is_local(uri):
        raise UsageError(
            f'{name} has a user-mode NIC (network.type = "user"), whose forwards listen on the '
            f"hypervisor's own 127.0.0.1, and {uri} is another host",
            f'give machines/{name}/meta.nix network.type = "network" or "bridge" for a remote hypervisor, '
            "or run it on a local URI",
        )


@contextmanager
def open_hypervisor(settings: Settings, uri: str) -> Iterator[Hypervisor]:
    check_uri_for_user(uri)
    with open_host(uri, settings.pool, settings.pool_path_for(uri)) as hv:
        yield hv


@contextmanager
def vm_session(settings: Settings, name: str) -> Iterator[VmSession]:
    """Validate the name, find its machine, take its lock, then connect: usage errors come first
    and nothing is touched before the lock is held."""
    check_vm_name(name)
    machine = settings.machine(name)
    uri = settings.uri_for(machine)
    check_uri_for_user(uri)  # a usage error, so before the lock like the others
    with resource_lock(uri, name), open_hypervisor(settings, uri) as hv:
        yield VmSession(name, machine, settings, hv)
