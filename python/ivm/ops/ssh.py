"""`ssh`: log in to a VM, trusting exactly its identity host key, or with a host CA, the CA that
signed its certificate (no trust-on-first-use prompt)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ivm.config import Settings
from ivm.errors import ToolError
from ivm.hypervisor.domains import State, addresses, require
from ivm.identity.host_ca import HostCa, load_host_ca
from ivm.identity.source import load_identity, machine_dir
from ivm.identity.sshcert import ALIAS_PREFIX, Certificate
from ivm.machines import NetworkType
from ivm.names import check_vm_name
from ivm.ops.session import open_hypervisor
from ivm.run import find_tool
from ivm.runtime_dir import file_name, runtime_dir


def known_hosts_line(alias: str, public_key: str) -> str:
    key_type, blob = public_key.split()[:2]
    return f"{alias} {key_type} {blob}\n"


def known_hosts(targets: Sequence[Target], ca: HostCa | None) -> str:
    """The pinned known_hosts text: with a CA, one @cert-authority line for every VM whose identity
    carries a valid certificate from it (a recreated or rolled-back VM keeps passing), and the key
    of each other VM; without one, the key of each VM."""
    now = int(time.time())
    certified = [t for t in targets if ca is not None and covered(t, ca, now)]
    head = ca.known_hosts_line(",".join(t.alias for t in certified)) if ca is not None and certified else ""
    rest = "".join(known_hosts_line(t.alias, t.host_public_key) for t in targets if t not in certified)
    return head + rest


def covered(target: Target, ca: HostCa, now: int) -> bool:
    """The CA vouches for this VM: its certificate is the CA's, names its alias, and is valid now."""
    cert = target.certificate
    return (
        cert is not None
        and cert.ca_blob == ca.public.blob
        and target.alias in cert.principals
        and cert.valid_after <= now < cert.valid_before
    )


def host_ca(settings: Settings) -> HostCa | None:
    """The CA ssh trusts (--host-ca, IVM_HOST_CA): only its public half is read."""
    if settings.host_ca is None:
        return None
    return load_host_ca(settings.host_ca, settings.project_root, signing=False)


# ssh options that a user's ~/.ssh/config could set and that must not apply to a VM whose guest may
# be hostile: no agent or X11 forwarding into it, no forwarded ports, no commands run on the host, no
# shared connection, no host key learnt or checked by address.
HARDENING = (
    "ForwardAgent=no",
    "ForwardX11=no",
    "ClearAllForwardings=yes",
    "PermitLocalCommand=no",
    "ProxyCommand=none",
    "ProxyJump=none",
    "ControlMaster=no",
    "ControlPath=none",
    "Tunnel=no",
    "CheckHostIP=no",
    "UpdateHostKeys=no",
)


def ssh_argv(
    alias: str, address: str, user: str, known_hosts: Path, command: Sequence[str], port: int | None = None
) -> list[str]:
    """ssh with strict checking against one known_hosts file; the alias ties the key to the VM, not
    to an address that DHCP may hand to another VM later. `--` ends the options before the address,
    so nothing the guest reports is ever read as an option."""
    strict = (
        f"HostKeyAlias={alias}",
        f"UserKnownHostsFile={ssh_config_path(known_hosts)}",
        "GlobalKnownHostsFile=/dev/null",
        "StrictHostKeyChecking=yes",
    )
    options = [arg for option in (*strict, *HARDENING) for arg in ("-o", option)]
    port_args = ["-p", str(port)] if port is not None else []
    return ["ssh", *options, "-l", user, *port_args, "--", address, *command]


def ssh_config_path(path: Path) -> str:
    """`path` as one ssh_config argument: quoted (it may hold spaces), `%` kept literal."""
    text = str(path)
    if '"' in text or any(ord(c) < 32 for c in text):
        raise ToolError(f"cannot hand ssh the path {text!r}", "set XDG_RUNTIME_DIR to a plain path")
    return '"' + text.replace("%", "%%") + '"'


@dataclass(frozen=True)
class Target:
    """Where ssh goes for one VM: its alias, a validated address and its pinned host key."""

    name: str
    uri: str
    alias: str
    address: str
    host_public_key: str
    port: int | None = None  # a user-mode NIC's forward on the hypervisor's loopback
    certificate: Certificate | None = None  # the identity's host certificate, if it has one


def resolve_target(settings: Settings, name: str) -> Target:
    """The VM's address (an IP of its own NIC, as libvirt or its agent reports it) and its identity
    host key; a one-line ToolError when it has no network, is not running or has no address."""
    check_vm_name(name)
    machine = settings.machine(name)
    if machine.network.type is NetworkType.NONE:
        raise ToolError(
            f"{name} has no network (its network type is none), so ssh cannot reach it",
            f"use `ivm console {name}`, or give it a network in machines/{name}/meta.nix "
            f"and run `ivm define {name}` and restart it",
        )
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
    return Target(
        name,
        uri,
        f"{ALIAS_PREFIX}{name}",
        found[0],
        identity.host_public_key,
        forward.host if forward else None,
        identity.host_certificate,
    )


def prepare_ssh(settings: Settings, name: str, user: str, command: Sequence[str]) -> list[str]:
    """Everything `ivm ssh` needs before it hands the terminal to ssh: the argv."""
    ca = host_ca(settings)  # a CA refused is refused before anything is looked up
    target = resolve_target(settings, name)
    with runtime_dir() as directory:  # rewritten each time: the identity's key is the only truth
        text = known_hosts([target], ca)
        path = directory.write(file_name(target.uri, name, ".known_hosts"), text.encode())
    argv = ssh_argv(target.alias, target.address, user, path, command, target.port)
    argv[0] = find_tool("ssh", "openssh-client")
    return argv
