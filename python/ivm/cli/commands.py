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


VM, FLEET = "ivm.cli.vm", "ivm.cli.fleet"
COMMANDS: dict[str, Lazy] = {
    "build": Lazy(VM, "Build NAME's base image with Nix and print its path and base hash."),
    "console": Lazy(VM, "Attach to NAME's serial console (leave with Ctrl-])."),
    "create": Lazy(
        VM, "Create NAME's disks: import the base if new, make the boot overlay, var and identity disks."
    ),
    "define": Lazy(VM, "Define (or update) NAME's libvirt domain; it takes effect at the next boot."),
    "destroy": Lazy(VM, "Undefine NAME and delete its boot and identity disks."),
    "gc": Lazy(FLEET, "Delete base images that no VM uses, on every hypervisor the machines name."),
    "identity-disk": Lazy(
        VM, "Write the identity disk image for the identity files in SOURCE (plumbing, used by tests)."
    ),
    "list": Lazy(FLEET, "List every machine with its state and base."),
    "rollback": Lazy(FLEET, "Put NAME back on the base it ran before its last upgrade (its /var is kept)."),
    "ssh": Lazy(
        FLEET, "Log in to NAME with ssh, trusting only its identity host key (strict checking, no prompt)."
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
    "up": Lazy(VM, "Build, create, define and start NAME: the one command for a new VM."),
    "upgrade": Lazy(FLEET, "Move VMs to the current build, keeping their /var."),
    "xml": Lazy(VM, "Print the domain XML that `define` would use."),
}
MODULES = tuple(dict.fromkeys(lazy.module for lazy in COMMANDS.values()))
