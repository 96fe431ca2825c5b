"""`python -m bench` (or bench/run): run every benchmark side by side on this machine and
write bench/results/<date>.json, <date>.md and <date>-fleet.png."""

from __future__ import annotations

import argparse
import compileall
import datetime
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import prereqs

CASES = ("startup", "provision", "fleet", "fleet500", "import", "up", "boot", "upgrade", "rollout", "profile")
RESULTS = Path(__file__).parent / "results"


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument(
        "--only",
        default=",".join(CASES),
        help=f"comma-separated cases to run (default: all of {','.join(CASES)})",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="where to write the results (default bench/results)"
    )
    parser.add_argument("--fleet-sizes", default="1,10,25,50", help="fleet sizes (default 1,10,25,50)")
    parser.add_argument(
        "--fleet-max", type=int, default=500, help="VMs in the large fleet (default 500; fleet500 case)"
    )
    parser.add_argument(
        "--rollout-runs",
        type=int,
        default=None,
        help="runs of the rollout case (default --runs; one run upgrades 22 VMs, each a TCG boot)",
    )
    parser.add_argument(
        "--rollout-vms",
        type=int,
        default=10,
        help="running VMs the rollout case upgrades (default 10; 0 leaves the upgrades out)",
    )
    args = parser.parse_args(argv)
    args.only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = sorted(set(args.only) - set(CASES))
    if unknown or args.runs < 1 or (args.rollout_runs is not None and args.rollout_runs < 1):
        parser.error(f"unknown case(s) {', '.join(unknown)}" if unknown else "--runs must be at least 1")
    args.fleet_sizes = tuple(int(n) for n in args.fleet_sizes.split(","))
    return args


def compile_bytecode() -> None:
    """Write ivm's bytecode before any figure, as installing it does (pip, Nix): otherwise, with
    PYTHONDONTWRITEBYTECODE set or sources newer than their cache, every command run would
    compile the changed modules again and the figures would measure that."""
    import ivm  # noqa: PLC0415

    package = Path(ivm.__file__).parent
    if not compileall.compile_dir(package, quiet=1):
        say(f"could not compile the bytecode under {package}: start-up figures include compiling")


def run_cases(args: argparse.Namespace) -> dict[str, Any]:
    # Imported here, after the prerequisites check, so a missing package is reported, not raised.
    from bench import host  # noqa: PLC0415
    from bench.cases import (  # noqa: PLC0415
        base_import,
        boot,
        fleet,
        fleet500,
        profile,
        provision,
        rollout,
        startup,
        up,
        upgrade,
    )
    from bench.lab import BenchError, Lab  # noqa: PLC0415
    from bench.stats import Figure  # noqa: PLC0415

    compile_bytecode()

    table: dict[str, Callable[[Lab], dict[str, Any]]] = {
        "startup": lambda lab: startup.run(lab, args.runs),
        "provision": lambda lab: provision.run(lab, args.runs),
        "fleet": lambda lab: fleet.run(lab, args.runs, args.fleet_sizes),
        "fleet500": lambda lab: fleet500.run(lab, args.runs, args.fleet_max),
        "import": lambda lab: base_import.run(lab, args.runs),
        "up": lambda lab: up.run(lab, args.runs),
        "boot": lambda lab: boot.run(lab, args.runs),
        "upgrade": lambda lab: upgrade.run(lab, args.runs),
        "rollout": lambda lab: rollout.run(lab, args.rollout_runs or args.runs, args.rollout_vms),
        "profile": lambda lab: profile.run(lab, args.runs),
    }
    started = time.monotonic()
    now = datetime.datetime.now(datetime.UTC)
    cases: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    load: dict[str, list[float]] = {}
    during: dict[str, Figure] = {}
    failed: dict[str, str] = {}
    with Lab() as lab, host.LoadSampler() as sampler:
        say(f"pool {lab.pool} in {lab.scratch}, {args.runs} runs per figure")
        machine = host.describe(lab.conn, lab.scratch)
        for name in [c for c in CASES if c in args.only]:
            say(f"{name} ...")
            t, load_before = time.monotonic(), os.getloadavg()[0]
            mark = sampler.mark()
            try:
                cases[name] = table[name](lab)
            except BenchError as e:  # the other cases' figures are still written
                failed[name] = str(e)
                say(f"{name} failed: {e}")
                continue
            seconds[name] = time.monotonic() - t
            # Other work on the machine shows here: the figures are only comparable side by side.
            load[name] = [load_before, os.getloadavg()[0]]
            during[name] = Figure.of([*sampler.since(mark), load[name][1]], "load")
            say(
                f"{name} done in {seconds[name]:.0f} s (load {load[name][0]:.1f} -> {load[name][1]:.1f}, "
                f"{during[name].low:.1f}-{during[name].high:.1f} during)"
            )
    return {
        "date": now.date().isoformat(),
        "started": now.isoformat(timespec="seconds"),
        "duration_s": time.monotonic() - started,
        "case_seconds": seconds,
        "load_average_1min": load,
        "load_average_1min_during": during,
        "runs": args.runs,
        "rollout_runs": args.rollout_runs or args.runs,
        "machine": machine,
        "cases": cases,
        "failed": failed,
    }


def write(results: dict[str, Any], out: Path) -> list[Path]:
    from bench import plot, report  # noqa: PLC0415 -- matplotlib, after the prerequisites check

    results["targets"] = report.targets(results["cases"])
    out.mkdir(parents=True, exist_ok=True)
    stem = out / results["date"]
    written = []
    if "fleet" in results["cases"] or "fleet500" in results["cases"]:
        written.append(plot.fleet_plot(results, stem.with_name(f"{results['date']}-fleet.png")))
    if "rollout" in results["cases"]:
        written.append(plot.rollout_plot(results, stem.with_name(f"{results['date']}-rollout.png")))
    md = stem.with_suffix(".md")
    md.write_text(report.markdown(results))
    js = stem.with_suffix(".json")
    js.write_text(json.dumps(report.plain(results), indent=2, ensure_ascii=False) + "\n")
    return [js, md, *written]


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    problems = prereqs.missing()
    if problems:
        for problem in problems:
            say(problem)
        say("nothing was run; the bench installs nothing itself")
        return 2
    if args.runs < 5:
        say(f"--runs {args.runs}: figures will not be medians of ≥ 5 runs as the targets ask")
    # A plain `kill` must still clean up the VMs, volumes and pool: make it an exception.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    results = run_cases(args)
    paths = write(results, args.out)
    print(paths[1].read_text(), end="")
    say("wrote " + ", ".join(str(p) for p in paths))
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
