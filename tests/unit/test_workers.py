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
from ivm.ops import workers
from ivm.ops.session import Hypervisor, VmSession
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
    real = workers.open_hypervisor

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
    ],
)
def test_bad_fleet_input_is_one_line_exit_2(run_cli: RunCli, args: tuple[str, ...], problem: str) -> None:
    r = run_cli(*args)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ivm: error:") and problem in lines[0], r.stderr
    assert r.stdout == ""
