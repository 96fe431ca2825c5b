"""`plan` and `apply` on a real daemon: one VM of each kind of drift gets exactly its actions, apply
converges, a second plan is empty, and a VM with nothing changed keeps its QEMU process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Fleet, vm_name
from tests.lab.standin.image import build_standin_image


@pytest.fixture(scope="module")
def staying(tmp_path_factory: pytest.TempPathFactory, system_uri: str) -> tuple[Path, Path]:
    """Stand-ins that keep running after their report and answer guest-agent pings: A and B."""
    d = tmp_path_factory.mktemp("staying")
    return (
        build_standin_image(d / "a.raw", "A", stay=True, agent=True),
        build_standin_image(d / "b.raw", "B", stay=True, agent=True),
    )


def qemu_pid(name: str) -> int:
    return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text())


def plan(fleet: Fleet, *args: str) -> tuple[int, dict[str, list[str]], list[str]]:
    r = fleet.ivm("plan", *args, "--json", check=False)
    assert r.returncode in (0, 3), r.stderr
    doc = json.loads(r.stdout)
    return r.returncode, {v["name"]: v["actions"] for v in doc["vms"]}, [o["name"] for o in doc["orphans"]]


def test_plan_apply_converge_and_leave_the_unchanged_running(
    fleet: Fleet, staying: tuple[Path, Path]
) -> None:
    image_a, image_b = (str(p) for p in staying)
    keep, ident, redef, new = (fleet.add(vm_name(p)) for p in ("keep", "ident", "redef", "new"))
    r = fleet.ivm("create", keep, ident, redef, "--image", image_a, "--jobs", "2")
    assert "3 created, 0 failed" in r.stdout
    assert "3 defined, 0 failed" in fleet.ivm("define", keep, ident, redef).stdout
    fleet.ivm("start", keep)
    pid = qemu_pid(keep)

    # one kind of drift each
    (fleet.root / "machines" / ident / "tcp_ports").write_text("8080\n")
    doc = json.loads(fleet.machines_file.read_text())
    doc["machines"][redef]["memory_mib"] = 320
    fleet.machines_file.write_text(json.dumps(doc))

    code, actions, orphans = plan(fleet, "--all", "--image", image_a)
    assert code == 3
    assert actions == {
        keep: [],
        ident: ["identity"],
        redef: ["redefine"],
        new: ["create", "define", "start"],
    }
    assert orphans == []
    text = fleet.ivm("plan", "--all", "--image", image_a, check=False)
    [line] = [x for x in text.stdout.splitlines() if x.startswith(f"{redef}: ")]
    # The description names the memory too, so it differs with it; nothing else may.
    assert line.startswith(f"{redef}: redefine: ") and "memory differs" in line, line
    assert set(line.split(": ", 2)[2].split("; ")) <= {
        "description differs",
        "memory differs",
        "currentMemory differs",
    }
    assert "3 to change, 1 unchanged, 0 failed to plan" in text.stdout

    r = fleet.ivm("apply", "--all", "--image", image_a, "--jobs", "3")
    assert f"{keep}: no changes" in r.stdout
    assert f"{new}: create, define, start" in r.stdout
    assert "3 changed, 1 unchanged, 0 failed" in r.stdout
    assert qemu_pid(keep) == pid, "apply restarted a VM with nothing changed"

    code, actions, _ = plan(fleet, "--all", "--image", image_a)
    assert code == 0 and all(a == [] for a in actions.values()), actions
    r = fleet.ivm("apply", "--all", "--image", image_a)
    assert "0 changed, 4 unchanged, 0 failed" in r.stdout
    assert qemu_pid(keep) == pid

    # behind its build: upgrade (a shut-off VM stays off); then the machine disappears: an orphan
    code, actions, _ = plan(fleet, redef, "--image", image_b)
    assert code == 3 and actions == {redef: ["import-base", "upgrade"]}
    fleet.ivm("apply", redef, "--image", image_b)
    assert plan(fleet, redef, "--image", image_b)[:2] == (0, {redef: []})
    doc = json.loads(fleet.machines_file.read_text())
    del doc["machines"][ident]
    fleet.machines_file.write_text(json.dumps(doc))
    code, actions, orphans = plan(fleet, "--all", "--image", image_a)
    assert orphans == [ident] and ident not in actions
    assert code == 3  # redef is now behind image A again; the orphan itself is no change
    r = fleet.ivm("plan", "--all", "--image", image_a, check=False)
    assert re.search(rf"^{ident}: orphan .* left alone$", r.stdout, re.MULTILINE), r.stdout

    # asked for: --prune destroys the orphan, keeping its data
    r = fleet.ivm("apply", "--all", "--image", image_a, "--prune")
    assert f"{ident}: orphan destroyed, kept its data on {ident}-var.qcow2" in r.stdout, r.stdout
    assert plan(fleet, "--all", "--image", image_a)[2] == []
    assert f"{ident}-var.qcow2" in fleet.volumes()


def test_two_applies_at_once_change_a_vm_once(
    fleet: Fleet, staying: tuple[Path, Path], tmp_path: Path
) -> None:
    """Run 1 is frozen inside the VM's change (its lock held); run 2 must not do the change too."""
    image_a = str(staying[0])
    name = fleet.add(vm_name("twice"))
    fleet.ivm("create", name, "--image", image_a)
    fleet.ivm("define", name)
    (fleet.root / "machines" / name / "tcp_ports").write_text("8443\n")
    flag = tmp_path / "paused"
    env = {**fleet.env(), "IVM_FAILPOINT": "upgrade:stopped", "IVM_FAILPOINT_PAUSE": str(flag)}
    first = subprocess.Popen(
        fleet.argv("apply", name, "--image", image_a),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not flag.exists():
            assert first.poll() is None and time.monotonic() < deadline, "run 1 never reached its pause"
            time.sleep(0.1)
        second = fleet.ivm("apply", name, "--image", image_a, check=False)
    finally:
        pid = int(flag.read_text()) if flag.exists() else first.pid
        os.kill(pid, signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0 and f"{name}: identity" in out, out + err
    assert second.returncode == 1 and f"{name}: failed: {name} is busy" in second.stdout, second.stdout
    assert plan(fleet, name, "--image", image_a)[:2] == (0, {name: []})
