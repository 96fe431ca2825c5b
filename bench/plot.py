"""The fleet plot: time and bytes on disk per VM against VM count, 1 to 500 (matplotlib, PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure as Chart

MIB = 1024**2


def fleet_plot(results: dict[str, Any], dest: Path) -> Path:
    cases = results["cases"]
    fig = Chart(figsize=(10, 4), layout="constrained")  # no pyplot: no display or backend needed
    left, right = fig.subplots(1, 2)
    if f := cases.get("fleet"):
        rows = f["rows"]
        vms = [r["vms"] for r in rows]
        per_vm = [r["per_vm"] for r in rows]
        left.errorbar(
            vms,
            [p.median for p in per_vm],
            yerr=[[p.median - p.low for p in per_vm], [p.high - p.median for p in per_vm]],
            marker="o",
            capsize=3,
            label="ivm create + ivm define, one CLI run each (median, min-max)",
        )
        right.plot(vms, [r["bytes_per_vm"].median / MIB for r in rows], marker="o", label="CLI fleet")
    if big := cases.get("fleet500"):
        points = big["checkpoints"]
        vms = [p["vms"] for p in points]
        left.plot(vms, [p["per_vm_s"] for p in points], marker="s", label="create + define in one process")
        right.plot(vms, [p["bytes_per_vm"] / MIB for p in points], marker="s", label="one-process fleet")
    left.axhline(0.5, linestyle=":", color="red", label="target: 0.5 s/VM")
    left.set(xscale="log", xlabel="VMs", ylabel="seconds per VM", title="time per VM, 1 to 500 VMs")
    left.set_ylim(bottom=0)
    left.legend(fontsize="small")
    right.axhline(2, linestyle=":", color="red", label="target: 2 MiB/VM")
    right.set(xscale="log", xlabel="VMs", ylabel="MiB allocated per VM", title="disk per VM (base apart)")
    right.set_ylim(bottom=0)
    right.legend(fontsize="small")
    m = results["machine"]
    fig.suptitle(
        f"{results['date']}, {m['cpus']} CPUs, {m['os']}, {m['accelerator'].split(' ')[0]}", fontsize="small"
    )
    fig.savefig(dest, dpi=100)
    return dest
