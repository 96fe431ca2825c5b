"""Health-gated upgrades on a real daemon: a guest whose agent answers passes; a canary that never
answers is rolled back on its own, runs its previous base again with its /var, and the rest of the
fleet is not touched."""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any

import pytest

from tests.integration.conftest import Fleet, vm_name
from tests.integration.standin.image import build_standin_image
from tests.integration.test_apply import qemu_pid


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory, system_uri: str) -> tuple[str, str, str]:
    """Staying stand-ins: A and B answer guest-agent pings, C never does."""
    d = tmp_path_factory.mktemp("agents")
    return (
        str(build_standin_image(d / "a.raw", "A", stay=True, agent=True)),
        str(build_standin_image(d / "b.raw", "B", stay=True, agent=True)),
        str(build_standin_image(d / "c.raw", "C", stay=True, agent=False)),
    )


def status(fleet: Fleet, name: str) -> dict[str, Any]:
    rows = json.loads(fleet.ivm("status", name, "--json", "--no-eval").stdout)
    return dict(rows[0])


def test_unhealthy_canary_rolls_back_and_stops_the_run(fleet: Fleet, agents: tuple[str, str, str]) -> None:
    image_a, image_b, image_c = agents
    canary, other = fleet.add(vm_name("can")), fleet.add(vm_name("oth"))
    fleet.ivm("up", canary, other, "--image", image_a, "--jobs", "2")

    # healthy: the agent answers on the new base
    r = fleet.ivm(
        "upgrade", canary, "--image", image_b, "--force", "--timeout", "1", "--health-timeout", "120"
    )
    assert "1 upgraded, 0 up to date, 0 failed" in r.stdout, r.stdout
    on_b = status(fleet, canary)["base"]
    other_pid = qemu_pid(other)

    r = fleet.ivm(
        "upgrade", canary, other, "--image", image_c, "--canary", "1", "--force", "--timeout", "1",
        "--health-timeout", "30", check=False,
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert (
        f"{canary}: rolled back: no answer from its guest agent within 30 s (it is also silent" in r.stdout
    ), r.stdout
    assert f"not started: {other}" in r.stdout
    assert "1 rolled back, 1 not started" in r.stdout
    assert r.stderr.strip().splitlines()[-1].startswith("ivm: error: 1 VM(s) were unhealthy")

    after = status(fleet, canary)
    assert after["state"] == "running" and after["base"] == on_b
    assert after["volumes"][f"{canary}-var.qcow2"] and after["var_used_bytes"]
    assert qemu_pid(other) == other_pid, "the run touched a VM after the canary failed"
    assert status(fleet, other)["base"] != on_b  # still on A: never upgraded


@pytest.mark.parametrize("point", ["upgrade:restarted", "upgrade:unhealthy"])
def test_a_wave_killed_while_judging_health_is_finished_by_a_rerun(
    fleet: Fleet, agents: tuple[str, str, str], point: str
) -> None:
    """Killed after the restart on a base that never gets healthy (before the verdict, or between
    the verdict and the rollback): the re-run still judges the VM and rolls it back."""
    image_a, _, image_c = agents
    name = fleet.add(vm_name("hk"))
    fleet.ivm("up", name, "--image", image_a)
    on_a = status(fleet, name)["base"]
    upgrade = ("upgrade", name, "--image", image_c, "--force", "--timeout", "1", "--health-timeout", "20")
    env = {**fleet.env(), "IVM_FAILPOINT": point}
    killed = subprocess.run(fleet.argv(*upgrade), env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert status(fleet, name)["base"] != on_a  # left running on the unhealthy base
    again = fleet.ivm(*upgrade, check=False)
    assert again.returncode == 1 and f"{name}: rolled back:" in again.stdout, again.stdout + again.stderr
    after = status(fleet, name)
    assert (after["base"], after["state"]) == (on_a, "running")
