"""Fleet rollout: `upgrade` of VMS running VMs with --jobs VMS against --jobs 1 and against one
other VM's upgrade taken just before (health-gated: the stand-ins stay up and answer guest-agent
pings); `plan` over PLAN_VMS created and defined VMs; a /var snapshot (internal qcow2, what
upgrade takes) against a volume clone, in seconds and bytes, on a var disk holding DATA_MIB of data.

Targets: parallel upgrade at most 1.5 times one VM's; plan of 50 VMs < 2 s.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from tests.integration.standin.image import build_standin_image

from bench.lab import BenchError, Lab
from bench.stats import Figure
from ivm.hypervisor import snapshots

VMS = 10
PLAN_VMS = 50
DATA_MIB = 1024
UPGRADE = ("--force", "--timeout", "5", "--health-timeout", "600", "--keep", "0")


def run(
    lab: Lab, runs: int, vms: int = VMS, plan_vms: int = PLAN_VMS, data_mib: int = DATA_MIB
) -> dict[str, Any]:
    return {
        "vms": vms,
        **(_upgrade(lab, runs, vms) if vms else {}),  # 0: no upgrades (each is a TCG boot to the agent)
        **_plan(lab, runs, plan_vms),
        **_snapshot(lab, runs, data_mib),
    }


def _staying(lab: Lab, marker: str) -> Path:
    path = lab.work / f"standin-stay-{marker}.raw"
    return path if path.exists() else build_standin_image(path, marker, stay=True, agent=True)


def _upgrade(lab: Lab, runs: int, vms: int) -> dict[str, Any]:
    images = [str(_staying(lab, "A")), str(_staying(lab, "B"))]
    names = [lab.name(f"r{i}") for i in range(vms)]
    solo = lab.name("rsolo")  # one VM's upgrade, outside the fleet, so the fleet upgrades all of its VMs
    lab.add_machines([*names, solo], var_size_gib=1)
    lab.ivm("up", *names, solo, "--image", images[0], "--jobs", "2")
    one: list[float] = []
    sequential: list[float] = []
    parallel: list[float] = []
    on = 0
    try:
        for _ in range(runs):
            # each step moves every VM to the other base: B with --jobs 1, back to A with --jobs VMS
            for jobs, into in ((1, sequential), (vms, parallel)):
                on = 1 - on
                one.append(lab.ivm("upgrade", solo, "--image", images[on], *UPGRADE)[1])
                into.append(
                    lab.ivm("upgrade", *names, "--image", images[on], "--jobs", str(jobs), *UPGRADE)[1]
                )
    finally:
        lab.remove_vms([*names, solo])
    # ratios run by run, against the one VM's upgrade just before: `one` alternates sequential, parallel
    ratio = [p / o for p, o in zip(parallel, one[1::2], strict=True)]
    ratio_seq = [s / o for s, o in zip(sequential, one[0::2], strict=True)]
    return {
        "upgrade_one_vm": Figure.of(one),
        "upgrade_all_sequential": Figure.of(sequential),
        "upgrade_all_parallel": Figure.of(parallel),
        "upgrade_parallel_over_one": Figure.of(ratio, unit="x"),
        "upgrade_sequential_over_one": Figure.of(ratio_seq, unit="x"),
    }


def _plan(lab: Lab, runs: int, count: int) -> dict[str, Any]:
    image = str(lab.image("A"))
    names = [lab.name(f"p{i}") for i in range(count)]
    lab.add_machines(names, var_size_gib=1)
    lab.ivm("create", *names, "--image", image, "--jobs", "2")
    lab.ivm("define", *names, "--jobs", "2")
    samples = []
    for _ in range(runs):
        out, seconds = lab.ivm("plan", *names, "--image", image, "--no-eval")
        if f"0 to change, {count} unchanged" not in out:
            raise BenchError(f"plan found changes on a converged fleet:\n{out}")
        samples.append(seconds)
    lab.remove_vms(names)
    return {"plan_vms": count, "plan": Figure.of(samples)}


def _snapshot(lab: Lab, runs: int, data_mib: int) -> dict[str, Any]:
    name = lab.name("snap")
    lab.add_machines([name], var_size_gib=max(2, data_mib // 1024 + 1))
    lab.ivm("create", name, "--image", str(lab.image("A")))
    lab.ivm("define", name)
    var = lab.volume_path(f"{name}-var.qcow2")
    # Bench set-up only (ivm itself never writes into a guest disk): fill /var's disk with data.
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a 0 {data_mib}M", str(var)], check=True,
                   capture_output=True)  # fmt: skip
    lab.pool_obj().refresh(0)
    dom = lab.conn.lookupByName(name)
    internal_s: list[float] = []
    internal_bytes: list[float] = []
    clone_s: list[float] = []
    clone_bytes: list[float] = []
    for i in range(runs):
        before = var.stat().st_blocks * 512
        t = time.monotonic()
        snapshots.create(dom, f"bench-{i}", "bench", "vdb")
        internal_s.append(time.monotonic() - t)
        internal_bytes.append(var.stat().st_blocks * 512 - before)
        clone = f"{name}-clone-{i}.qcow2"
        xml = f"<volume><name>{clone}</name><target><format type='qcow2'/></target></volume>"
        t = time.monotonic()
        lab.pool_obj().createXMLFrom(xml, lab.pool_obj().storageVolLookupByName(var.name), 0)
        clone_s.append(time.monotonic() - t)
        clone_bytes.append(lab.volume_path(clone).stat().st_blocks * 512)
        lab.delete_volume(clone)
    for snap in dom.listAllSnapshots(0):
        snap.delete(0)
    lab.remove_vms([name])
    return {
        "snapshot_data_mib": data_mib,
        "snapshot_internal": Figure.of(internal_s),
        "snapshot_internal_bytes": Figure.of(internal_bytes, unit="B"),
        "snapshot_clone": Figure.of(clone_s),
        "snapshot_clone_bytes": Figure.of(clone_bytes, unit="B"),
    }
