"""`ssh-config`: OpenSSH Host blocks, so ssh, scp, rsync and Ansible reach VMs as `ivm ssh` does."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ivm.config import Settings
from ivm.errors import ToolError, UsageError
from ivm.identity.host_ca import HostCa
from ivm.machines import NetworkType
from ivm.names import check_vm_name
from ivm.ops.ssh import HARDENING, Target, known_hosts, resolve_target, ssh_config_path
from ivm.runtime_dir import runtime_dir

KNOWN_HOSTS_SUFFIX = ".known_hosts"
STDOUT_KNOWN_HOSTS = "ssh-config.known_hosts"


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


def host_block(target: Target, user: str, known_hosts: Path) -> str:
    """One Host block: the same strict checking and hardening options as `ivm ssh` passes with -o."""
    options = [
        ("HostName", target.address),
        *((("Port", str(target.port)),) if target.port is not None else ()),
        ("User", user),
        ("HostKeyAlias", target.alias),
        ("UserKnownHostsFile", ssh_config_path(known_hosts)),
        ("GlobalKnownHostsFile", "/dev/null"),
        ("StrictHostKeyChecking", "yes"),
        *(tuple(option.split("=", 1)) for option in HARDENING),
    ]
    return f"Host {target.name}\n" + "".join(f"    {key} {value}\n" for key, value in options)


def render(
    targets: Sequence[Target],
    skipped: Sequence[Skipped],
    user: str,
    known_hosts_file: Path,
    ca: HostCa | None = None,
) -> tuple[str, str]:
    """The config text and the known_hosts text it names. Each block ends with an empty line and the
    file has no top-level options, so it can be `Include`d from ~/.ssh/config."""
    head = "# Written by `ivm ssh-config`; regenerate it rather than editing it.\n"
    notes = "".join(f"# {s.name}: skipped: {s.reason}\n" for s in skipped)
    blocks = "".join(host_block(t, user, known_hosts_file) + "\n" for t in targets)
    return head + notes + ("\n" if notes else "") + blocks, known_hosts(targets, ca)


def collect(settings: Settings, names: Iterable[str], all_vms: bool) -> tuple[list[Target], list[Skipped]]:
    """Named VMs must be reachable (the error `ivm ssh` gives); with --all, those that are not
    (no network, not running, no address yet) are skipped with the reason."""
    if all_vms:
        targets: list[Target] = []
        skipped: list[Skipped] = []
        for name in sorted(settings.machines):
            if settings.machine(name).network.type is NetworkType.NONE:
                skipped.append(Skipped(name, "no network"))
                continue
            try:
                targets.append(resolve_target(settings, name))
            except ToolError as e:
                skipped.append(Skipped(name, e.message.replace("\n", " ")))
        return targets, skipped
    return [resolve_target(settings, check_vm_name(n)) for n in names], []


def write_config(path: Path, config: str, keys: str) -> None:
    """Write the known_hosts file, then the config, each atomically (a new file renamed over the old
    one), so an ssh reading either never sees half a file."""
    if path.is_dir():
        raise UsageError(f"{path} is a directory", "name a file to write the Host blocks to")
    _write_atomic(known_hosts_for(path), keys.encode())
    _write_atomic(path, config.encode())


def known_hosts_for(path: Path) -> Path:
    return path.absolute().with_name(path.name + KNOWN_HOSTS_SUFFIX)


def stdout_known_hosts(keys: str) -> Path:
    """Printing to stdout: the pinned keys go to the private runtime directory."""
    with runtime_dir() as directory:
        return directory.write(STDOUT_KNOWN_HOSTS, keys.encode())


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as e:
        raise ToolError(f"cannot write in {path.parent}: {e.strerror}", "name a writable place") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        Path(tmp).unlink()
        raise
    os.close(fd)
    Path(tmp).replace(path)
