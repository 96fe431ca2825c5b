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

from dataclasses import dataclass

from ivm.hypervisor import agent
from ivm.hypervisor.domains import State, require
from ivm.ops.session import VmSession
from ivm.poll import SYSTEM, Clock, Deadline, poll

# The guest keeps its agent stopped when it refused its identity disk (modules/guest-agent.nix).
SILENT_AGENT = " (it is also silent when the guest refused its identity disk)"


@dataclass(frozen=True)
class Health:
    ok: bool
    why: str  # what was seen, for the report line


def wait_healthy(s: VmSession, timeout: float, clock: Clock = SYSTEM) -> Health:
    """Wait up to `timeout` seconds for the agent to answer, then for the machine's check to pass."""
    deadline = Deadline.after(timeout, clock)
    dom = require(s.domain(), s.name)

    def agent_answers() -> Health | None:
        if agent.ping(dom):
            return Health(True, "guest agent answers")
        state = s.hv.domains.state(dom)
        if state is not State.RUNNING:
            return Health(False, f"it stopped ({state}) before its guest agent answered")
        return None

    answered = poll(agent_answers, deadline, interval=1, what=f"{s.name}'s guest agent")
    if answered is None:
        return Health(False, f"no answer from its guest agent within {timeout:g} s{SILENT_AGENT}")
    check = s.machine.health_check
    if not answered.ok or not check:
        return answered
    last: list[int | None] = [None]

    def check_passes() -> Health | None:
        last[0] = agent.run_check(dom, check, deadline)
        return Health(True, "guest agent answers, health check passed") if last[0] == 0 else None

    passed = poll(check_passes, deadline, interval=2, what=f"{s.name}'s health check")
    if passed is not None:
        return passed
    seen = "did not finish" if last[0] is None else f"exited {last[0]}"
    return Health(False, f"health check {check[0]} {seen} within {timeout:g} s")
