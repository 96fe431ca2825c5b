"""The results as JSON and as Markdown tables, and each performance target judged met or missed."""

from __future__ import annotations

from typing import Any

from bench.stats import Figure

MIB = 1024**2


def plain(value: Any) -> Any:
    """Results with every Figure turned into its JSON form."""
    if isinstance(value, Figure):
        return value.as_json()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def fmt(fig: Figure, digits: int = 2) -> str:
    """`median (min-max) unit`; bytes shown in MiB."""
    if fig.unit == "B":
        return f"{fig.median / MIB:.2f} MiB ({fig.low / MIB:.2f}-{fig.high / MIB:.2f})"
    if fig.unit == "x":
        return ratio_fmt(fig)
    return f"{fig.median:.{digits}f} s ({fig.low:.{digits}f}-{fig.high:.{digits}f})"


def ratio_fmt(fig: Figure) -> str:
    """`median x (min-max)` of a ratio taken run by run."""
    return f"{fig.median:.2f}x ({fig.low:.2f}-{fig.high:.2f})"


def targets(cases: dict[str, Any]) -> list[dict[str, Any]]:
    """Each performance target with what was measured and whether it is met."""
    found: list[dict[str, Any]] = []

    def add(name: str, target: str, measured: str, met: bool) -> None:
        found.append({"name": name, "target": target, "measured": measured, "met": met})

    if s := cases.get("startup"):
        for label, r in s["ratios"].items():
            add(f"start-up: `{label}`", "≤ 1.5x `python -c 'import click'`", f"{r:.2f}x", r <= 1.5)
    if p := cases.get("provision"):
        add("provision: ivm vs spec path", "≥ 50x faster", f"{p['speedup']:.0f}x faster", p["speedup"] >= 50)
        t = p["ivm_create"].median
        add("provision: ivm create", "< 0.3 s", f"{t:.3f} s", t < 0.3)
    if f := cases.get("fleet"):
        per_vm = [row["per_vm"].median for row in f["rows"]]
        worst = max(per_vm)
        add("fleet: time per VM", "< 0.5 s at every size", f"≤ {worst:.3f} s", worst < 0.5)
        spread = max(per_vm) / min(per_vm)
        add(
            "fleet: linear",
            "per-VM time within 25 % from 1 to 50 VMs",
            f"max/min {spread:.2f}",
            spread <= 1.25,
        )
        size = max(row["bytes_per_vm"].median for row in f["rows"])
        add("fleet: on disk per VM", "< 2 MiB (base counted once)", f"{size / MIB:.2f} MiB", size < 2 * MIB)
        if "one_command_ratio" in (top := f["rows"][-1]):
            r = top["one_command_ratio"].median
            add(
                f"{top['vms']} VMs by one `create` + one `define` vs {top['vms']} of each",
                "≤ 0.33x",
                f"{r:.2f}x",
                r <= 1 / 3,
            )
    if i := cases.get("import"):
        found += _import_targets(i)
    if big := cases.get("fleet500"):
        for label, fig in big["commands"].items():
            t, rss = fig["time"].median, fig["peak_memory"].high
            add(f"{big['vms']} VMs: `{label}`", "≤ 1 s", f"{t:.2f} s", t <= 1.0)
            add(
                f"{big['vms']} VMs: `{label}`, peak memory",
                "≤ 150 MiB",
                f"{rss / MIB:.0f} MiB",
                rss <= 150 * MIB,
            )
    if u := cases.get("up"):
        add("`ivm up` vs `virt-install --import`", "≤ 0.5x", f"{u['ratio']:.2f}x", u["ratio"] <= 0.5)
    if b := cases.get("boot"):
        add("boot to done: ivm start vs plain QEMU", "≤ 1.1x", f"{b['ratio']:.2f}x", b["ratio"] <= 1.1)
    if ro := cases.get("rollout"):
        found += _rollout_targets(ro)
    return found


def _import_targets(i: dict[str, Any]) -> list[dict[str, Any]]:
    def target(name: str, bound: str, r: float, met: bool) -> dict[str, Any]:
        return {"name": name, "target": bound, "measured": f"{r:.2f}x", "met": met}

    found = [
        target(
            "base import vs cp --sparse=always (image seen before)", "≤ 1.5x", i["ratio"], i["ratio"] <= 1.5
        )
    ]
    if "ratio_synced" in i:
        found.append(
            target(
                "base import vs cp --sparse=always + sync (image seen before)",
                "reported",
                i["ratio_synced"],
                True,
            )
        )
    first = i["ratio_first"]
    found.append(
        target("base import, first sight of the image (hash included)", "≤ 1.5x", first, first <= 1.5)
    )
    if "ratio" in i.get("remote", {}):
        found.append(
            target("base import to a remote daemon (sparse stream)", "reported", i["remote"]["ratio"], True)
        )
    return found


def _rollout_targets(ro: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    if "upgrade_parallel_over_one" in ro:
        r = ro["upgrade_parallel_over_one"].median
        found.append(
            {
                "name": f"`upgrade` of {ro['vms']} running VMs, `--jobs {ro['vms']}`, vs one VM's",
                "target": "≤ 1.5x",
                "measured": f"{r:.2f}x",
                "met": r <= 1.5,
            }
        )
    t = ro["plan"].median
    found.append(
        {"name": f"`plan` of {ro['plan_vms']} VMs", "target": "< 2 s", "measured": f"{t:.2f} s", "met": t < 2}
    )
    return found


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _main_rows(cases: dict[str, Any]) -> list[str]:
    rows = [_row("measure", "ivm", "baseline", "ratio"), "|---|---|---|---|"]
    sub = "&nbsp;&nbsp;"
    if s := cases.get("startup"):
        for label, fig in s["commands"].items():
            rows.append(
                _row(
                    f"start-up, whole process ({s['runs']} runs)",
                    f"`{label}` {fmt(fig, 3)}",
                    f"`python -c 'import click'` {fmt(s['floor'], 3)}",
                    f"{s['ratios'][label]:.2f}x",
                )
            )
    if p := cases.get("provision"):
        rows.append(
            _row(
                "provision one VM, base in pool",
                f"`ivm create` {fmt(p['ivm_create'])}",
                f"spec path {fmt(p['spec_path'])}",
                f"{p['speedup']:.0f}x faster",
            )
        )
        rows += [_row(f"{sub}spec: {step}", "", fmt(fig), "") for step, fig in p["spec_parts"].items()]
    if i := cases.get("import"):
        gib, data = i["image"]["apparent_bytes"] / 1024**3, i["image"]["data_bytes"] / MIB
        what = f"import a {gib:.0f} GiB sparse raw base ({data:.0f} MiB of data)"
        rows.append(
            _row(
                f"{what}, image seen before",
                f"`ivm create` {fmt(i['ivm_create'])}",
                f"`cp --sparse=always` {fmt(i['cp_sparse'])}",
                f"{i['ratio']:.2f}x",
            )
        )
        if "cp_sparse_synced" in i:
            rows.append(
                _row(
                    f"{sub}against a copy synced to disk (libvirt's copy syncs)",
                    "",
                    f"`cp --sparse=always` + `sync` {fmt(i['cp_sparse_synced'])}",
                    f"{i['ratio_synced']:.2f}x",
                )
            )
        rows.append(
            _row(
                f"{sub}the same, first sight of the image (hashed)",
                f"`ivm create` {fmt(i['ivm_create_first'])}",
                "",
                f"{i['ratio_first']:.2f}x",
            )
        )
        if "ratio" in (r := i.get("remote", {})):
            rows.append(
                _row(
                    f"{sub}to a second daemon on its own socket (sparse stream)",
                    f"`ivm create` {fmt(r['ivm_create'])}",
                    f"`cp --sparse=always` {fmt(r['cp_sparse'])}",
                    f"{r['ratio']:.2f}x",
                )
            )
        rows += [_row(f"{sub}ivm: {step}", fmt(fig), "", "") for step, fig in i["parts"].items()]
    if u := cases.get("up"):
        rows.append(
            _row(
                "a new VM defined and started (base in pool)",
                f"`ivm up` {fmt(u['ivm_up'])}",
                f"`virt-install --import` {fmt(u['virt_install'])}",
                f"{u['ratio']:.2f}x",
            )
        )
        rows += [_row(f"{sub}virt-install: {k}", "", fmt(v), "") for k, v in u["virt_install_parts"].items()]
        rows.append(
            _row(f"{sub}the daemon's floor: `virsh define` + `virsh start`", "", fmt(u["daemon_floor"]), "")
        )
    if b := cases.get("boot"):
        rows.append(
            _row(
                f"boot to `IVM-REPORT done` ({b['accelerator'].upper()})",
                f"`ivm start` {fmt(b['ivm_start_to_done'])}",
                f"plain QEMU {fmt(b['qemu_to_done'])}",
                f"{b['ratio']:.2f}x",
            )
        )
        rows.append(_row(f"{sub}the `ivm start` command alone", fmt(b["ivm_start_command"]), "", ""))
    if u := cases.get("upgrade"):
        rows.append(
            _row(f"upgrade {u['vms']} running VMs: downtime per VM", fmt(u["downtime_per_vm"]), "", "")
        )
        rows.append(_row(f"{sub}the whole `ivm upgrade` of {u['vms']}", fmt(u["upgrade_command"]), "", ""))
    if (ro := cases.get("rollout")) and "upgrade_all_parallel" in ro:
        n = ro["vms"]
        rows.append(
            _row(
                f"health-gated `upgrade` of {n} running VMs, `--jobs {n}`",
                f"`ivm upgrade` {fmt(ro['upgrade_all_parallel'])}",
                f"one VM's `ivm upgrade` {fmt(ro['upgrade_one_vm'])}",
                ratio_fmt(ro["upgrade_parallel_over_one"]),
            )
        )
        rows.append(
            _row(
                f"{sub}the same {n}, `--jobs 1`",
                f"`ivm upgrade` {fmt(ro['upgrade_all_sequential'])}",
                "",
                ratio_fmt(ro["upgrade_sequential_over_one"]) if "upgrade_sequential_over_one" in ro else "",
            )
        )
    if ro := cases.get("rollout"):
        rows.append(_row(f"`ivm plan` of {ro['plan_vms']} converged VMs", fmt(ro["plan"]), "", ""))
        mib = ro["snapshot_data_mib"]
        rows.append(
            _row(
                f"/var snapshot, var disk holding {mib} MiB (VM stopped)",
                f"internal qcow2 snapshot {fmt(ro['snapshot_internal'])}, "
                f"{fmt(ro['snapshot_internal_bytes'])} more on disk",
                f"volume clone {fmt(ro['snapshot_clone'])}, {fmt(ro['snapshot_clone_bytes'])} on disk",
                f"{ro['snapshot_internal'].median / ro['snapshot_clone'].median:.2f}x",
            )
        )
    return rows


def _fleet_rows(f: dict[str, Any]) -> list[str]:
    head = (
        "VMs",
        "`create` + `define` per VM: total",
        "per VM",
        "one `create NAME...` + one `define NAME...`: total",
        "per VM",
        "ratio",
    )
    rows = [_row(*head), "|---|---|---|---|---|---|"]
    for r in f["rows"]:
        if "one_command_total" not in r:
            continue
        cells = (
            fmt(r["total"]),
            fmt(r["per_vm"], 3),
            fmt(r["one_command_total"]),
            fmt(r["one_command_per_vm"], 3),
            ratio_fmt(r["one_command_ratio"]),
        )
        rows.append(_row(str(r["vms"]), *cells))
    rows = rows if len(rows) > 2 else []
    disk_head = ("VMs", "on disk per VM (base apart)", "pool / VMs (base once)", "pool rescan after")
    rows += ["", _row(*disk_head), "|---|---|---|---|"] if rows else [_row(*disk_head), "|---|---|---|---|"]
    for r in f["rows"]:
        disk = (fmt(r["bytes_per_vm"]), fmt(r["pool_bytes_per_vm"]), fmt(r["pool_refresh"], 3))
        rows.append(_row(str(r["vms"]), *disk))
    rows += [
        "",
        f"One `ivm create`: {fmt(f['ivm_create'], 3)}; one `ivm define`: {fmt(f['ivm_define'], 3)}; "
        f"the base: {f['base_bytes'] / MIB:.1f} MiB.",
    ]
    return rows


def _fleet500_rows(big: dict[str, Any]) -> list[str]:
    rows = [
        _row("VMs made in one process", "create + define, total", "per VM", "on disk per VM"),
        "|---|---|---|---|",
    ]
    for p in big["checkpoints"]:
        rows.append(
            _row(
                str(p["vms"]),
                f"{p['seconds']:.1f} s",
                f"{p['per_vm_s']:.3f} s",
                f"{p['bytes_per_vm'] / MIB:.2f} MiB",
            )
        )
    rows += ["", _row(f"over {big['vms']} VMs", "time", "peak memory"), "|---|---|---|"]
    for label, fig in big["commands"].items():
        rows.append(_row(f"`{label}`", fmt(fig["time"]), fmt(fig["peak_memory"])))
    return rows


def _rollout_runs(results: dict[str, Any]) -> str:
    runs = results.get("rollout_runs", results["runs"])
    return (
        f" ({runs} for the rollout case)" if "rollout" in results["cases"] and runs != results["runs"] else ""
    )


def revive(value: Any) -> Any:
    """Results read back from their JSON, with every figure a Figure again (to render them anew)."""
    if isinstance(value, dict):
        if "samples" in value and "unit" in value:
            return Figure.of(value["samples"], value["unit"])
        return {k: revive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [revive(v) for v in value]
    return value


def _load_line(results: dict[str, Any]) -> list[str]:
    during = results.get("load_average_1min_during")
    if not during:
        return []
    cases = ", ".join(
        f"{name} {fig.median:.1f} ({fig.low:.1f}-{fig.high:.1f})" for name, fig in during.items()
    )
    cpus = results["machine"]["cpus"]
    return [f"1-minute load average while each case ran (median, min-max; {cpus} CPUs): {cases}.", ""]


def markdown(results: dict[str, Any]) -> str:
    cases, m = results["cases"], results["machine"]
    lines = [
        f"Run {results['date']} on {m['cpu']} ({m['cpus']} CPUs, {m['memory_gib']} GiB), {m['os']}, "
        f"libvirt {m['libvirt']}, {m['qemu']}, {m['accelerator']}; ivm {m['ivm_commit']}. "
        f"Each figure: median (min-max) of {results['runs']} runs{_rollout_runs(results)}. "
        f"The bench took {results['duration_s'] / 60:.1f} min.",
        "",
        *_load_line(results),
        *[f"**Case `{name}` failed:** {why}\n" for name, why in results.get("failed", {}).items()],
        *_main_rows(cases),
    ]
    if f := cases.get("fleet"):
        lines += ["", *_fleet_rows(f)]
    if big := cases.get("fleet500"):
        lines += ["", *_fleet500_rows(big)]
    lines += ["", _row("target", "wanted", "measured", "met"), "|---|---|---|---|"]
    lines += [
        _row(t["name"], t["target"], t["measured"], "yes" if t["met"] else "**no**")
        for t in results["targets"]
    ]
    return "\n".join(lines) + "\n"
