"""The QEMU guest agent through libvirt (its virtio-serial channel, no network): ping and exec."""

from __future__ import annotations

import json
import logging
from typing import Any

import libvirt
import libvirt_qemu

from ivm.hypervisor.handles import DomainHandle
from ivm.poll import Deadline, poll

log = logging.getLogger("ivm.agent")
CALL_TIMEOUT_S = 5  # one agent call; a guest still booting has no agent yet and fails at once


def _call(dom: DomainHandle, command: dict[str, Any]) -> Any:
    """One agent command's `return` value; None when the agent does not answer (yet)."""
    try:
        reply = libvirt_qemu.qemuAgentCommand(dom, json.dumps(command), CALL_TIMEOUT_S, 0)
    except libvirt.libvirtError as e:
        log.debug("%s: agent: %s", dom.name(), (e.get_error_message() or str(e)).strip())
        return None
    try:
        return json.loads(reply).get("return")
    except (ValueError, AttributeError):
        log.debug("%s: agent sent %r", dom.name(), reply[:200])
        return None


def ping(dom: DomainHandle) -> bool:
    """True when the guest agent answers guest-ping."""
    return _call(dom, {"execute": "guest-ping"}) is not None


def run_check(dom: DomainHandle, argv: tuple[str, ...], deadline: Deadline) -> int | None:
    """Run `argv` in the guest (guest-exec: no shell, output not captured); its exit code, or None
    when it could not be started or did not finish by `deadline`."""
    started = _call(dom, {"execute": "guest-exec", "arguments": {"path": argv[0], "arg": list(argv[1:])}})
    if not isinstance(started, dict) or not isinstance(started.get("pid"), int):
        return None
    pid = started["pid"]

    def exited() -> tuple[int | None] | None:
        status = _call(dom, {"execute": "guest-exec-status", "arguments": {"pid": pid}})
        if isinstance(status, dict) and status.get("exited"):
            code = status.get("exitcode")
            return (code if isinstance(code, int) else None,)
        return None

    found = poll(exited, deadline, interval=0.5, what=f"{argv[0]} in {dom.name()}")
    return found[0] if found is not None else None
