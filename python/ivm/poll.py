"""Bounded waits: every wait for something outside ivm polls it, here, until a deadline.

A guest powering off, its agent answering, a lock another run holds: each is asked again every
`interval` seconds, and the answer "not yet" at the deadline is returned to the caller, who says
what that means. Time comes from a `Clock`, so tests drive a fake one and never sleep.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger("ivm.poll")
T = TypeVar("T")


@dataclass(frozen=True)
class Clock:
    """Where a wait reads the time and how it sleeps: the monotonic clock unless a test says."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


SYSTEM = Clock()


@dataclass(frozen=True)
class Deadline:
    """`seconds` after `start` on a clock; several waits in a row can share one."""

    start: float
    seconds: float
    clock: Clock = SYSTEM

    @classmethod
    def after(cls, seconds: float, clock: Clock = SYSTEM) -> Deadline:
        return cls(clock.now(), seconds, clock)

    @property
    def at(self) -> float:
        return self.start + self.seconds

    def left(self) -> float:
        return max(0.0, self.at - self.clock.now())

    def passed(self) -> bool:
        return self.clock.now() >= self.at


def poll(
    probe: Callable[[], T | None],
    deadline: Deadline,
    *,
    interval: float,
    what: str,
    report_every: float | None = None,
    logger: logging.Logger = log,
) -> T | None:
    """Call `probe` until it returns something other than None, and return that; return None when
    the deadline passes first. The probe runs at least once, and once more at the deadline (a sleep
    never overshoots it). With `report_every`, log every so many seconds how long it has waited for
    `what` since the deadline was set, on the waiter's `logger` (a wait that would otherwise be silent)."""
    clock = deadline.clock
    told = clock.now()
    while True:
        found = probe()
        if found is not None:
            return found
        now = clock.now()
        if now >= deadline.at:
            log.debug("gave up waiting for %s after %.1f s", what, now - deadline.start)
            return None
        if report_every is not None and now - told >= report_every:
            told = now
            logger.info("still waiting for %s: %.0f s of %g s", what, now - deadline.start, deadline.seconds)
        clock.sleep(min(interval, deadline.at - now))
