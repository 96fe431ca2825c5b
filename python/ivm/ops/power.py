"""`start` and `stop`."""

from __future__ import annotations

from ivm.config import Settings
from ivm.errors import ToolError
from ivm.hypervisor.domains import State, require
from ivm.ops.define import created_base
from ivm.ops.session import VmSession, open_hypervisor


def start(s: VmSession) -> bool:
    """Start the VM; False if it was already running."""
    dom = require(s.domain(), s.name)
    state = s.hv.domains.state(dom)
    if state is State.RUNNING:
        return False
    if state is State.PAUSED:
        raise ToolError(f"{s.name} is paused", f"resume it with: virsh resume {s.name}")
    created_base(s)  # a clear message instead of QEMU's when a disk is gone
    s.hv.domains.start(dom)
    return True


def stop(s: VmSession, force: bool, timeout: float) -> str:
    """Shut the VM down gracefully; with `force`, pull the plug when the guest does not comply.

    Returns how it ended: "already", "shutdown" or "forced".
    """
    dom = require(s.domain(), s.name)
    if s.hv.domains.state(dom) is State.SHUT_OFF:
        return "already"
    if s.hv.domains.shutdown(dom, timeout):
        return "shutdown"
    if not force:
        raise ToolError(
            f"{s.name} did not shut down within {timeout:g} s",
            f"wait longer with --timeout, or pass --force to power it off (ivm stop --force {s.name})",
        )
    s.hv.domains.power_off(dom)
    return "forced"


def check_console(settings: Settings, name: str, uri: str) -> None:
    """The connection works and NAME runs: otherwise virsh would print libvirt's raw errors."""
    with open_hypervisor(settings, uri) as hv:
        dom = require(hv.domains.lookup(name), name)
        state = hv.domains.state(dom)
    if state is not State.RUNNING:
        raise ToolError(f"{name} is {state}: it has no console to attach to", f"start it: ivm start {name}")
