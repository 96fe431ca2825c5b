"""Which module defines each command, and the first sentence of its help: `ivm --help` and a usage
error need no command module, so they start without importing libvirt, lxml or the core.

A new command must be added here, or `ivm` will not find it: the unit tests check that this
table matches the commands the modules define.
"""

from __future__ import annotations

from typing import NamedTuple


class Lazy(NamedTuple):
    module: str
    help: str  # the docstring's first sentence: all that click shows of it in the command list


VM, FLEET, POOL, COMPLETION = "ivm.cli.vm", "ivm.cli.fleet", "ivm.cli.pool", "ivm.cli.completion"
COMMANDS: dict[str, Lazy] = {
    "apply": Lazy(FLEET, "Carry out `ivm plan`: create, import, upgrade, rebuild identities, define, start."),
    "build": Lazy(VM, "Build NAME's base image with Nix and print its path and base hash."),
    "completion": Lazy(
        COMPLETION,
        "Print the completion script for SHELL; it completes commands, options and machine names"
        " (from --machines/IVM_MACHINES, else the project's machines/ folders).",
    ),
    "console": Lazy(VM, "Attach to NAME's serial console (leave with Ctrl-])."),
    "create": Lazy(
        VM, "Create each VM's disks: import the base if new, make the boot overlay, var and identity disks."
    ),
    "define": Lazy(VM, "Define (or update) each VM's libvirt domain; it takes effect at the next boot."),
    "destroy": Lazy(VM, "Undefine NAME and delete its boot and identity disks."),
    "gc": Lazy(FLEET, "Delete base images that no VM uses, on every hypervisor the machines name."),
    "identity-disk": Lazy(
        VM, "Write the identity disk image for the identity files in SOURCE (plumbing, used by tests)."
    ),
    "list": Lazy(FLEET, "List every machine with its state and base."),
    "plan": Lazy(FLEET, "Show what `apply` would do to each VM, changing nothing."),
    "pool": Lazy(POOL, "ivm's storage pool (IVM_POOL, default ivm) on the hypervisor --connect names."),
    "rollback": Lazy(FLEET, "Put NAME back on the base it ran before its last upgrade."),
    "snapshots": Lazy(
        FLEET,
        "List NAME's /var snapshots, oldest first (upgrade takes one per new base; each is named after"
        " the base /var ran on).",
    ),
    "ssh": Lazy(
        FLEET, "Log in to NAME with ssh, trusting only its identity host key (strict checking, no prompt)."
    ),
    "ssh-config": Lazy(
        FLEET,
        "Print OpenSSH Host blocks for the VMs, so ssh, scp, rsync, Ansible and editors reach them"
        " without ivm: `Include` the file from ~/.ssh/config, then `ssh web1`.",
    ),
    "start": Lazy(VM, "Start NAME."),
    "status": Lazy(
        FLEET,
        "Show state, base, disks and var usage of the named machines (default: all), and drift: whether"
        " each runs an older base than the current build (--image's, else the flake's by `nix eval`,"
        " else the newest base in the pool that a VM of the same image runs).",
    ),
    "stop": Lazy(
        VM,
        "Shut NAME down (ACPI power button), waiting up to --timeout seconds; then give its read-only"
        " disks back to the pool's owner (libvirt leaves them to the VM's QEMU uid).",
    ),
    "up": Lazy(VM, "Build, create, define and start each VM: the one command for new VMs."),
    "upgrade": Lazy(FLEET, "Move VMs to the current build, keeping their /var."),
    "xml": Lazy(VM, "Print the domain XML that `define` would use, writing nothing."),
}
MODULES = tuple(dict.fromkeys(lazy.module for lazy in COMMANDS.values()))
