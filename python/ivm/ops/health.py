"""Is a VM that just restarted healthy? The signal comes from inside the guest without any network:
the QEMU guest agent answering on its virtio-serial channel, then, if the machine declares one in
meta.nix (`health_check`), that command exiting 0, run in the guest by the agent (guest-exec).

A guest that refused its new identity disk (a file breaks the image's rules) keeps its agent stopped,
so the VM counts as unhealthy: its old firewall ports and host key must not pass for the new ones.

The check runs inside the guest it judges, as the agent's user (root), never on the host: it can do
nothing a machine's own configuration could not already do, and its output is neither read nor
logged. Its exit code is the only thing the host learns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ivm.hypervisor import agent
from ivm.hypervisor.domains import State, require
from ivm.ops.session import VmSession

# The guest keeps its agent stopped when it refused its identity disk (modules/guest-agent.nix).
SILENT_AGENT = " (it is also silent when the guest refused its identity disk)"


@dataclass(frozen=True)
class Health:
    ok: bool
    why: str  # what was seen, for the report line


def wait_healthy(s: VmSession, timeout: float) -> Health:
    """Wait up to `timeout` seconds for the agent to answer, then for the machine's check to pass."""
    deadline = time.monotonic() + timeout
    dom = require(s.domain(), s.name)
    while not agent.ping(dom):
        if s.hv.domains.state(dom) is not State.RUNNING:
            return Health(False, f"it stopped ({s.hv.domains.state(dom)}) before its guest agent answered")
        if time.monotonic() >= deadline:
            return Health(False, f"no answer from its guest agent within {timeout:g} s{SILENT_AGENT}")
        time.sleep(1)
    check = s.machine.health_check
    if not check:
        return Health(True, "guest agent answers")
    while True:
        code = agent.run_check(dom, check, deadline)
        if code == 0:
            return Health(True, "guest agent answers, health check passed")
        if time.monotonic() >= deadline:
            seen = "did not finish" if code is None else f"exited {code}"
            return Health(False, f"health check {check[0]} {seen} within {timeout:g} s")
        time.sleep(2)
