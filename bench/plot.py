"""The fleet plot: create + define time and bytes on disk against VM count (matplotlib, PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure as Chart

MIB = 1024**2


def fleet_plot(results: dict[str, Any], dest: Path) -> Path:
    rows = results["cases"]["fleet"]["rows"]
    base = results["cases"]["fleet"]["base_bytes"]
    vms = [r["vms"] for r in rows]
    total = [r["total"] for r in rows]
    fig = Chart(figsize=(10, 4), layout="constrained")  # no pyplot: no display or backend needed
    left, right = fig.subplots(1, 2)

    medians = [t.median for t in total]
    errors = [[t.median - t.low for t in total], [t.high - t.median for t in total]]
    left.errorbar(vms, medians, yerr=errors, marker="o", capsize=3, label="measured (median, min-max)")
    per_vm = rows[0]["per_vm"].median
    left.plot(
        vms, [per_vm * n for n in vms], "--", color="grey", label=f"linear from 1 VM ({per_vm:.2f} s/VM)"
    )
    left.plot(vms, [0.5 * n for n in vms], ":", color="red", label="target: 0.5 s/VM")
    left.set(xlabel="VMs", ylabel="seconds", title="ivm create + define, one VM after another")
    left.legend(fontsize="small")

    per_vm_mib = [r["bytes_per_vm"].median / MIB for r in rows]
    pool_mib = [(r["bytes_per_vm"].median * r["vms"] + base) / MIB for r in rows]
    right.plot(vms, pool_mib, marker="o", label=f"whole pool (base {base / MIB:.0f} MiB, once)")
    right.plot(vms, [p * n for p, n in zip(per_vm_mib, vms, strict=True)], marker="s", label="VMs' own disks")
    right.plot(vms, [2 * n for n in vms], ":", color="red", label="target: 2 MiB/VM")
    right.set(xlabel="VMs", ylabel="MiB allocated on disk", title="disk use right after create")
    right.legend(fontsize="small")
    m = results["machine"]
    fig.suptitle(
        f"{results['date']}, {m['cpus']} CPUs, {m['os']}, {m['accelerator'].split(' ')[0]}", fontsize="small"
    )
    fig.savefig(dest, dpi=100)
    return dest
