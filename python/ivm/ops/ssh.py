"""`ssh`: log in to a VM, trusting exactly its identity host key (no trust-on-first-use prompt)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from ivm.config import Settings
from ivm.errors import ToolError
from ivm.hypervisor.domains import State, addresses, require
from ivm.identity.source import load_identity, machine_dir
from ivm.names import check_vm_name
from ivm.ops.session import open_hypervisor
from ivm.run import find_tool


def known_hosts_line(alias: str, public_key: str) -> str:
    key_type, blob = public_key.split()[:2]
    return f"{alias} {key_type} {blob}\n"


def ssh_argv(
    alias: str, address: str, user: str, known_hosts: Path, command: Sequence[str], port: int | None = None
) -> list[str]:
    """ssh with strict checking against one known_hosts file; the alias ties the key to the VM, not
    to an address that DHCP may hand to another VM later."""
    return [
        "ssh",
        "-o", f"HostKeyAlias={alias}",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UpdateHostKeys=no",
        "-l", user,
        *(["-p", str(port)] if port is not None else []),
        address,
        *(["--", *command] if command else []),
    ]  # fmt: skip


def known_hosts_path(uri: str, name: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ivm" / "known_hosts"
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    return cache / f"{hashlib.sha256(uri.encode()).hexdigest()[:12]}-{name}"


def prepare_ssh(settings: Settings, name: str, user: str, command: Sequence[str]) -> list[str]:
    """Everything `ivm ssh` needs before it hands the terminal to ssh: the argv."""
    check_vm_name(name)
    machine = settings.machine(name)
    uri = settings.uri_for(machine)
    # A user-mode NIC is reached only through its forward on the hypervisor's loopback.
    forward = machine.network.forward_to(22)
    identity = load_identity(machine_dir(settings.project_root, name), name, generate=False)
    with open_hypervisor(settings, uri) as hv:
        dom = require(hv.domains.lookup(name), name)
        if hv.domains.state(dom) is not State.RUNNING:
            raise ToolError(f"{name} is not running", f"start it: ivm start {name}")
        found = ["127.0.0.1"] if forward else addresses(dom)
    if not found:
        raise ToolError(
            f"no IP address known for {name}",
            "it gets one from libvirt's DHCP on a NAT network, or from the QEMU guest agent; "
            "wait for the guest to boot, or check its network",
        )
    alias = f"ivm-{name}"
    path = known_hosts_path(uri, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(known_hosts_line(alias, identity.host_public_key))
    argv = ssh_argv(alias, found[0], user, path, command, forward.host if forward else None)
    argv[0] = find_tool("ssh", "openssh-client")
    return argv
