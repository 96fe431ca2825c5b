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
        if all("one_command_per_vm" in r for r in rows):
            one = [r["one_command_per_vm"] for r in rows]
            left.errorbar(
                vms,
                [p.median for p in one],
                yerr=[[p.median - p.low for p in one], [p.high - p.median for p in one]],
                marker="^",
                capsize=3,
                label="one ivm create NAME... + one ivm define NAME...",
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


def rollout_plot(results: dict[str, Any], dest: Path) -> Path:
    """Upgrade of a fleet against one VM's, and a /var snapshot against a volume clone."""
    ro = results["cases"]["rollout"]
    upgrades = "upgrade_one_vm" in ro
    fig = Chart(figsize=(10 if upgrades else 5, 4), layout="constrained")
    left, right = fig.subplots(1, 2) if upgrades else (None, fig.subplots(1, 1))
    if left is not None:
        _upgrade_bars(left, ro)
    mib = ro["snapshot_data_mib"]
    snaps = {"internal qcow2 snapshot": ro["snapshot_internal"], "volume clone": ro["snapshot_clone"]}
    _bars(right, snaps)
    right.set(ylabel="seconds (median, min-max)", title=f"/var snapshot, {mib} MiB of data")
    for i, fig_bytes in enumerate((ro["snapshot_internal_bytes"], ro["snapshot_clone_bytes"])):
        right.annotate(f"{fig_bytes.median / MIB:.0f} MiB on disk", (i, 0), ha="center", va="bottom")
    m = results["machine"]
    fig.suptitle(
        f"{results['date']}, {m['cpus']} CPUs, {m['os']}, {m['accelerator'].split(' ')[0]}", fontsize="small"
    )
    fig.savefig(dest, dpi=100)
    return dest


def _upgrade_bars(left: Any, ro: dict[str, Any]) -> None:
    n = ro["vms"]
    bars = {
        "one VM": ro["upgrade_one_vm"],
        f"{n} VMs, --jobs {n}": ro["upgrade_all_parallel"],
        f"{n} VMs, --jobs 1": ro["upgrade_all_sequential"],
    }
    _bars(left, bars)
    target = 1.5 * ro["upgrade_one_vm"].median
    left.axhline(target, linestyle=":", color="red", label="target: 1.5x one VM")
    left.set_ylim(top=max(left.get_ylim()[1], 1.1 * target))
    left.set(ylabel="seconds (median, min-max)", title="health-gated `ivm upgrade` of running VMs")
    left.legend(fontsize="small")


def _bars(ax: Any, figures: dict[str, Any]) -> None:
    values = list(figures.values())
    ax.bar(
        range(len(values)),
        [v.median for v in values],
        yerr=[[v.median - v.low for v in values], [v.high - v.median for v in values]],
        capsize=4,
        tick_label=list(figures),
    )
    ax.set_ylim(bottom=0)
