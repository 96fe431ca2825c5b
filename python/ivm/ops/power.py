"""`start` and `stop`; both put the read-only disks' owner and mode right (hypervisor/ownership.py)."""

from __future__ import annotations

import logging
from enum import StrEnum

from ivm.config import Settings
from ivm.errors import ToolError
from ivm.hypervisor.domains import State, require, restart_pending, set_restart_pending
from ivm.hypervisor.handles import DomainHandle
from ivm.hypervisor.ownership import find_drift, repair
from ivm.hypervisor.security import static_uid
from ivm.ops.define import created_base
from ivm.ops.session import VmSession, open_hypervisor

log = logging.getLogger("ivm.power")


class Stopped(StrEnum):
    """How `stop` ended."""

    ALREADY = "already"  # it was not running
    SHUTDOWN = "shutdown"  # the guest powered off when asked
    FORCED = "forced"  # the guest did not comply and --force pulled the plug


def start(s: VmSession) -> bool:
    """Start the VM; False if it was already running."""
    dom = require(s.domain(), s.name)
    state = s.hv.domains.state(dom)
    if state is State.RUNNING:
        return False
    if state is State.PAUSED:
        raise ToolError(f"{s.name} is paused", f"resume it with: virsh resume {s.name}")
    created_base(s)  # a clear message instead of QEMU's when a disk is gone
    repair_ownership(s, dom)
    try:
        s.hv.domains.start(dom)
    except ToolError as e:
        own_uid = static_uid(s.hv.domains.xml(dom))
        if own_uid is not None and "KVM kernel module: Permission denied" in e.message:
            raise ToolError(
                f"{s.name}'s QEMU runs as its own uid {own_uid} (this host has no AppArmor or SELinux "
                "for libvirt, so nothing else keeps VMs' disks apart) and may not open /dev/kvm",
                "enable libvirt's AppArmor or SELinux driver, or make /dev/kvm usable by every user "
                "(mode 0666, systemd's default), or use --virt-type qemu",
            ) from None
        raise
    if restart_pending(dom):  # the start an interrupted run owed it is made now
        set_restart_pending(dom, False)
    return True


def repair_ownership(s: VmSession, dom: DomainHandle, fatal: bool = True) -> None:
    """Give drifted read-only disks back to the pool's owner (a local pool only). Before a start a
    failure stops it; after a stop it is only reported (the VM did stop)."""
    drift = find_drift(s.hv.storage, s.hv.uri, s.volumes, static_uid(s.hv.domains.xml(dom)))
    for d in drift:
        log.info("repairing %s", d.line())
    try:
        repair(drift)
    except ToolError as e:
        if fatal:
            raise
        log.warning("%s; %s", e.message, e.hint)


def stop(s: VmSession, force: bool, timeout: float) -> Stopped:
    """Shut the VM down gracefully; with `force`, pull the plug when the guest does not comply."""
    dom = require(s.domain(), s.name)
    if s.hv.domains.state(dom) is State.SHUT_OFF:
        return Stopped.ALREADY
    if s.hv.domains.shutdown(dom, timeout):
        repair_ownership(s, dom, fatal=False)  # a domain defined before the labels left disks drifted
        return Stopped.SHUTDOWN
    if not force:
        raise ToolError(
            f"{s.name} did not shut down within {timeout:g} s",
            f"wait longer with --timeout, or pass --force to power it off (ivm stop --force {s.name})",
        )
    s.hv.domains.power_off(dom)
    repair_ownership(s, dom, fatal=False)
    return Stopped.FORCED


def check_console(settings: Settings, name: str, uri: str) -> None:
    """The connection works and NAME runs: otherwise virsh would print libvirt's raw errors."""
    with open_hypervisor(settings, uri) as hv:
        dom = require(hv.domains.lookup(name), name)
        state = hv.domains.state(dom)
    if state is not State.RUNNING:
        raise ToolError(f"{name} is {state}: it has no console to attach to", f"start it: ivm start {name}")
