"""The one bounded wait, on a fake clock (nothing sleeps): it returns the first answer, gives up at
its deadline after one last try there, never sleeps past it, and says how long it has waited. The
lock's wait for another run, the guest's power-off and the health gate use it."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from ivm.errors import ToolError
from ivm.hypervisor import agent
from ivm.hypervisor.domains import Domains, State
from ivm.hypervisor.handles import Connection, DomainHandle
from ivm.lock import resource_lock
from ivm.ops.health import SILENT_AGENT, Health, wait_healthy
from ivm.ops.session import VmSession
from ivm.poll import Clock, Deadline, poll
from ivm.runtime_dir import file_name


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []
        self.on_sleep: list[Any] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.slept.append(seconds)
        self.t += seconds
        for hook in self.on_sleep:
            hook()

    def clock(self) -> Clock:
        return Clock(self.now, self.sleep)


def test_the_first_answer_ends_the_wait_without_sleeping() -> None:
    fake = FakeClock()
    assert poll(lambda: "up", Deadline.after(10, fake.clock()), interval=1, what="x") == "up"
    assert fake.slept == []


def test_a_falsy_answer_is_still_an_answer() -> None:
    fake = FakeClock()
    assert poll(lambda: 0, Deadline.after(10, fake.clock()), interval=1, what="x") == 0
    assert poll(lambda: False, Deadline.after(10, fake.clock()), interval=1, what="x") is False


def test_at_the_deadline_it_tries_once_more_then_gives_up() -> None:
    fake = FakeClock()
    tried_at: list[float] = []

    def probe() -> str | None:
        tried_at.append(fake.t - 1000.0)
        return None

    assert poll(probe, Deadline.after(1, fake.clock()), interval=0.3, what="x") is None
    assert tried_at == pytest.approx([0, 0.3, 0.6, 0.9, 1.0])
    assert sum(fake.slept) == pytest.approx(1.0)  # the last sleep is cut short, never past the deadline


def test_an_answer_after_a_few_tries_is_returned() -> None:
    fake = FakeClock()
    answers = iter([None, None, "off"])
    assert poll(lambda: next(answers), Deadline.after(60, fake.clock()), interval=2, what="x") == "off"
    assert fake.slept == [2, 2]


def test_a_passed_deadline_still_tries_once() -> None:
    fake = FakeClock()
    calls: list[int] = []
    deadline = Deadline.after(5, fake.clock())
    fake.t += 10
    assert deadline.passed() and deadline.left() == 0
    assert poll(lambda: calls.append(1), deadline, interval=1, what="x") is None
    assert calls == [1] and fake.slept == []


def test_a_long_wait_says_how_long_it_has_waited(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeClock()
    with caplog.at_level(logging.INFO, logger="ivm.poll"):
        poll(lambda: None, Deadline.after(25, fake.clock()), interval=1, what="web1 to stop", report_every=10)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert lines == [
        "still waiting for web1 to stop: 10 s of 25 s",
        "still waiting for web1 to stop: 20 s of 25 s",
    ]


class _Dom:
    def __init__(self, off_after: int) -> None:
        self.asked = 0
        self.off_after = off_after

    def name(self) -> str:
        return "web1"


def _domains(monkeypatch: pytest.MonkeyPatch, dom: _Dom) -> Domains:
    def state(_self: Domains, d: _Dom) -> State:
        d.asked += 1
        return State.SHUT_OFF if d.asked > d.off_after else State.RUNNING

    monkeypatch.setattr(Domains, "state", state)
    return Domains(cast(Connection, None))  # state() is replaced: no call reaches libvirt


def test_wait_off_is_bounded_by_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClock()
    never = _Dom(off_after=10**9)
    assert _domains(monkeypatch, never).wait_off(cast(DomainHandle, never), 3, clock=fake.clock()) is False
    assert sum(fake.slept) == pytest.approx(3)
    soon = _Dom(off_after=4)
    assert (
        _domains(monkeypatch, soon).wait_off(cast(DomainHandle, soon), 3, clock=FakeClock().clock()) is True
    )


@pytest.fixture
def rundir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for d in ("run", "tmp", "xdg"):
        (tmp_path / d).mkdir(mode=0o755)
    monkeypatch.setattr("ivm.runtime_dir.RUN_ROOT", tmp_path / "run")
    monkeypatch.setattr("ivm.runtime_dir.TMP_ROOT", tmp_path / "tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    return tmp_path / ("run" if os.geteuid() == 0 else "xdg") / "ivm"


def _held(rundir: Path) -> int:
    with resource_lock("qemu:///system", "_base-x"):
        pass
    fd = os.open(rundir / file_name("qemu:///system", "_base-x", ".lock"), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another holder: flock is per open file
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"4242", 0)
    return fd


def test_waiting_for_a_lock_has_a_deadline(rundir: Path) -> None:
    fd = _held(rundir)
    fake = FakeClock()
    try:
        with (
            pytest.raises(ToolError) as e,
            resource_lock("qemu:///system", "_base-x", wait=90, clock=fake.clock()),
        ):
            pass
        assert e.value.message == "_base-x is still busy after 90 s: ivm (pid 4242) is working on it"
        assert "stop it" in (e.value.hint or "")
        assert sum(fake.slept) == pytest.approx(90)
    finally:
        os.close(fd)


def test_a_lock_released_while_waiting_is_taken(rundir: Path) -> None:
    fd = _held(rundir)
    fake = FakeClock()
    fake.on_sleep.append(lambda: fcntl.flock(fd, fcntl.LOCK_UN) if fake.t >= 1003 else None)
    try:
        with resource_lock("qemu:///system", "_base-x", wait=90, clock=fake.clock()):
            assert os.pread(fd, 32, 0) == str(os.getpid()).encode()
        assert 3 <= sum(fake.slept) < 4
    finally:
        os.close(fd)


def _health_session(state: State, check: tuple[str, ...] = ()) -> VmSession:
    """What wait_healthy reads of a session: the domain, its state and the machine's health check."""
    domains = SimpleNamespace(state=lambda _dom: state)
    fake = SimpleNamespace(
        name="web1",
        domain=object,
        hv=SimpleNamespace(domains=domains),
        machine=SimpleNamespace(health_check=check),
    )
    return cast(VmSession, fake)


def test_health_waits_for_the_agent_until_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClock()
    monkeypatch.setattr(agent, "ping", lambda _dom: False)
    h = wait_healthy(_health_session(State.RUNNING), 30, clock=fake.clock())
    assert h == Health(False, f"no answer from its guest agent within 30 s{SILENT_AGENT}")
    assert sum(fake.slept) == pytest.approx(30)


def test_health_stops_waiting_when_the_guest_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClock()
    monkeypatch.setattr(agent, "ping", lambda _dom: False)
    h = wait_healthy(_health_session(State.SHUT_OFF), 30, clock=fake.clock())
    assert h == Health(False, "it stopped (shut off) before its guest agent answered")
    assert fake.slept == []


def test_a_failing_health_check_is_retried_within_the_same_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClock()
    answers = iter([False, False, True])
    monkeypatch.setattr(agent, "ping", lambda _dom: next(answers))
    codes: list[float] = []

    def run_check(_dom: object, _argv: tuple[str, ...], deadline: Deadline) -> int:
        codes.append(deadline.left())
        return 1

    monkeypatch.setattr(agent, "run_check", run_check)
    h = wait_healthy(_health_session(State.RUNNING, ("/bin/check",)), 10, clock=fake.clock())
    assert h == Health(False, "health check /bin/check exited 1 within 10 s")
    assert codes[0] == pytest.approx(8) and codes[-1] == 0  # the agent's wait used 2 s of the 10
