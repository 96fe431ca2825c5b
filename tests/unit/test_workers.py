"""Fleet commands on many VMs: the worker pool (one connection per worker and hypervisor, one
failure does not stop the others) and their bad input (exit 2, nothing changed)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from ivm.config import Settings
from ivm.errors import ToolError
from ivm.hypervisor.host import Hypervisor
from ivm.ops import workers
from ivm.ops.session import VmSession, open_hypervisor
from ivm.ops.upgrade import FleetResult, Rollout, UpgradeResult
from tests.conftest import Project, RunCli, machine_entry


@pytest.fixture
def five(project: Project) -> Settings:
    project.write_machines({f"vm{i}": machine_entry(image_attr="image-vm") for i in range(5)})
    return Settings.from_env(
        {}, machines_file=project.machines_file, root=project.root, connect="test:///default"
    )


def test_each_vm_once_one_connection_per_worker_failures_reported(
    five: Settings, monkeypatch: pytest.MonkeyPatch, test_driver: Any
) -> None:
    opened: list[int] = []
    real = open_hypervisor  # the function workers calls, before the patch below

    @contextmanager
    def counting(settings: Settings, uri: str) -> Iterator[Hypervisor]:
        opened.append(threading.get_ident())
        with real(settings, uri) as hv:
            yield hv

    monkeypatch.setattr(workers, "open_hypervisor", counting)
    seen: list[str] = []
    both_running = threading.Barrier(2, timeout=10)

    def job(s: VmSession) -> str:
        if s.name in ("vm0", "vm1"):
            both_running.wait()  # proves two VMs are worked on at the same time
        if s.name == "vm3":
            raise ToolError("vm3 broke", "fix it")
        return s.name.upper()

    outcomes = workers.for_each_vm(
        five, sorted(five.machines), job, jobs=2, report=lambda o: seen.append(o.name)
    )
    assert [o.name for o in outcomes] == ["vm0", "vm1", "vm2", "vm3", "vm4"]
    assert [o.result for o in outcomes] == ["VM0", "VM1", "VM2", None, "VM4"]
    assert outcomes[3].error == "vm3 broke (fix it)"
    assert sorted(seen) == sorted(five.machines)
    # two workers, one connection each, plus one reopened after vm3's failure
    assert len(opened) <= 3 and len(set(opened)) == 2


def test_a_bug_in_one_job_is_an_outcome_not_a_hang(five: Settings, test_driver: Any) -> None:
    def job(s: VmSession) -> None:
        raise KeyError(s.name)

    outcomes = workers.for_each_vm(five, ["vm0", "vm1"], job, jobs=4, report=lambda o: None)
    assert all(o.error and o.error.startswith("internal error: KeyError") for o in outcomes)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("create",), "name the VMs, or pass --all"),
        (("define", "web1", "--all"), "name the VMs, or pass --all"),
        (("plan",), "name the VMs, or pass --all"),
        (("apply", "web1", "web9"), "unknown machine 'web9'"),
        (("up", "web1", "Bad"), "Bad"),
        (("create", "--all", "--jobs", "0"), "0"),
        (("upgrade", "--all", "--jobs", "0"), "0"),
        (("apply", "--all", "-j", "-1"), "-1"),
        (("apply", "web1", "--prune"), "--prune needs --all"),
        (("rollback", "web1", "--snapshot", "x"), "--snapshot needs --with-data"),
    ],
)
def test_bad_fleet_input_is_one_line_exit_2(run_cli: RunCli, args: tuple[str, ...], problem: str) -> None:
    r = run_cli(*args)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ivm: error:") and problem in lines[0], r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize(
    "check",
    ["/bin/true", [1], ["relative/cmd"], [""], [["/bin/true"]], {"cmd": "/bin/true"}],
)
def test_health_check_must_be_an_argv(project: Project, run_cli: RunCli, check: Any) -> None:
    project.write_machines({"web1": machine_entry(health_check=check)})
    r = run_cli("plan", "web1")
    assert r.exit_code == 2 and "machines.web1.health_check" in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1


def test_health_check_is_optional_and_kept(project: Project) -> None:
    project.write_machines(
        {"a": machine_entry(), "b": machine_entry(health_check=["/run/current-system/sw/bin/true", "-x"])}
    )
    s = Settings.from_env({}, machines_file=project.machines_file)
    assert s.machine("a").health_check == ()
    assert s.machine("b").health_check == ("/run/current-system/sw/bin/true", "-x")


def test_waves_canary_first_then_batches_of_jobs() -> None:
    names = [f"vm{i}" for i in range(7)]
    assert Rollout(jobs=3).waves(names) == [names]  # no gate, no canary: one pool
    assert Rollout(jobs=3, canary=1, health_timeout=60).waves(names) == [
        ["vm0"],
        ["vm1", "vm2", "vm3"],
        ["vm4", "vm5", "vm6"],
    ]
    assert Rollout(jobs=2, health_timeout=60).waves(names[:3]) == [["vm0", "vm1"], ["vm2"]]
    assert Rollout(canary=9, health_timeout=60).waves(names[:2]) == [["vm0", "vm1"]]


def test_rolled_back_line_and_summary() -> None:
    back = UpgradeResult("web1", "a" * 32, "b" * 32, True, False, True, 0.5, rolled_back="no answer")
    assert back.line() == f"web1: rolled back: no answer on base {'b' * 12}; running on base {'a' * 12} again"
    summary = FleetResult((back,), (), (), ("web2",)).summary()
    assert summary == "0 upgraded, 0 up to date, 0 failed, 0 not created, 1 rolled back, 1 not started"
