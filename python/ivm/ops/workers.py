"""One job per VM, run by up to --jobs worker threads across every hypervisor.

Each worker opens one connection per hypervisor it meets and reuses it for its next VMs (with
--jobs 1, one connection per hypervisor for the whole run); a connection that failed is dropped and
reopened for the next VM. Each VM is worked on under its own lock, as in every single-VM command.
One VM's failure never stops the others; each outcome is reported as soon as it is known.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Generic, TypeVar

from ivm.config import Settings
from ivm.errors import ToolError
from ivm.hypervisor.host import Hypervisor
from ivm.lock import resource_lock
from ivm.ops.session import VmSession, open_hypervisor

log = logging.getLogger("ivm.workers")
R = TypeVar("R")


@dataclass(frozen=True)
class Outcome(Generic[R]):
    name: str
    result: R | None = None
    error: str | None = None  # one line: what failed and what to do


class _Connections:
    """A worker's open connections, one per hypervisor URI."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.open: dict[str, tuple[AbstractContextManager[Hypervisor], Hypervisor]] = {}

    def get(self, uri: str) -> Hypervisor:
        if uri not in self.open:
            cm = open_hypervisor(self.settings, uri)
            self.open[uri] = (cm, cm.__enter__())
        return self.open[uri][1]

    def drop(self, uri: str) -> None:
        entry = self.open.pop(uri, None)
        if entry is not None:
            try:
                entry[0].__exit__(None, None, None)
            except ToolError:
                log.debug("closing a failed connection to %s failed", uri)

    def close(self) -> None:
        for uri in list(self.open):
            self.drop(uri)


def for_each_vm(
    settings: Settings,
    names: Sequence[str],
    job: Callable[[VmSession], R],
    *,
    jobs: int,
    report: Callable[[Outcome[R]], None],
) -> list[Outcome[R]]:
    """Run `job` on each VM (under its lock), up to `jobs` at a time; outcomes in `names` order."""
    pending = list(names)
    outcomes: dict[str, Outcome[R]] = {}
    guard = threading.Lock()

    def work() -> None:
        conns = _Connections(settings)
        try:
            while True:
                with guard:
                    if not pending:
                        return
                    name = pending.pop(0)
                outcome = _one(settings, conns, name, job)
                with guard:
                    outcomes[name] = outcome
                    report(outcome)
        finally:
            conns.close()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(max(1, min(jobs, len(names))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [outcomes[n] for n in names if n in outcomes]


def _one(settings: Settings, conns: _Connections, name: str, job: Callable[[VmSession], R]) -> Outcome[R]:
    uri = None
    try:
        machine = settings.machine(name)
        uri = settings.uri_for(machine)
        with resource_lock(uri, name):
            return Outcome(name, result=job(VmSession(name, machine, settings, conns.get(uri))))
    except ToolError as e:
        if uri is not None:
            conns.drop(uri)  # it may be the connection that failed: the next VM reconnects
        return Outcome(name, error=str(e))
    except Exception as e:  # a bug in one VM's job must not hang or kill the others
        log.debug("internal error on %s", name, exc_info=True)
        return Outcome(name, error=f"internal error: {type(e).__name__}: {e} (run with --debug)")
