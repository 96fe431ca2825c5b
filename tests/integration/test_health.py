"""Health-gated upgrades on a real daemon: a guest whose agent answers passes; a canary that never
answers is rolled back on its own, runs its previous base again with its /var, and the rest of the
fleet is not touched; a machine's health_check, run in the guest by its agent, keeps or rolls back
the upgrade by its exit code."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from typing import Any

import libvirt
import libvirt_qemu
import pytest

from tests.integration.conftest import BOOT_TIMEOUT, Fleet, vm_name
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


def wait_for_agent(fleet: Fleet, name: str) -> None:
    """Until the running stand-in's agent answers: it starts once the guest has counted its boot on
    /var. Twice a boot's allowance: an agent wait only costs time on a machine that needs it."""
    conn = fleet.conn()
    try:
        dom = conn.lookupByName(name)
        deadline = time.monotonic() + 2 * BOOT_TIMEOUT
        while True:
            try:
                libvirt_qemu.qemuAgentCommand(dom, '{"execute": "guest-ping"}', 5, 0)
                return
            except libvirt.libvirtError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{name}'s guest agent did not answer within {2 * BOOT_TIMEOUT:g} s")
                time.sleep(1)
    finally:
        conn.close()


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


@pytest.mark.parametrize(("check", "kept"), [("/bin/true", True), ("/bin/false", False)])
def test_the_health_check_decides_whether_an_upgrade_is_kept(
    fleet: Fleet, agents: tuple[str, str, str], check: str, kept: bool
) -> None:
    """The machine's health_check runs in the guest (guest-exec) once its agent answers on the new
    base: /bin/true keeps the upgrade, /bin/false rolls it back to A, running, /var kept. The
    upgrade is killed after the restart and the test waits for the agent itself, so a slow boot
    on a busy machine never uses up the verdict's --health-timeout; the re-run gives the verdict."""
    image_a, image_b, _ = agents
    name = fleet.add(vm_name("hc"), health_check=[check])
    fleet.ivm("up", name, "--image", image_a)
    on_a = status(fleet, name)["base"]
    upgrade = ("upgrade", name, "--image", image_b, "--force", "--timeout", "1", "--health-timeout", "20")
    env = {**fleet.env(), "IVM_FAILPOINT": "upgrade:restarted"}
    killed = subprocess.run(fleet.argv(*upgrade), env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    wait_for_agent(fleet, name)
    r = fleet.ivm(*upgrade, check=False)
    after = status(fleet, name)
    assert after["state"] == "running" and after["volumes"][f"{name}-var.qcow2"], after
    if kept:
        # The killed run had moved it; the re-run only gives the verdict: healthy, so nothing to undo.
        assert r.returncode == 0 and f"{name}: up to date on base" in r.stdout, r.stdout + r.stderr
        assert after["base"] not in (None, on_a)
    else:
        assert r.returncode == 1, r.stdout + r.stderr
        # A starved guest may answer guest-exec-status too late for the last try: "did not finish".
        line = rf"^{name}: rolled back: health check /bin/false (exited 1|did not finish) within 20 s "
        assert re.search(line, r.stdout, re.MULTILINE), r.stdout
        assert after["base"] == on_a
