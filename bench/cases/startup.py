"""Start-up: whole-process wall time of `ivm --help`, `ivm --version` and a usage error (an unknown
command), against the floor of any click program, `python -c 'import click'` with the same
interpreter. The four take turns in each round, so they see the same load."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from bench.lab import Lab, ivm_command
from bench.stats import Figure, clock

MIN_RUNS = 20
CASES = {
    "ivm --help": ("--help",),
    "ivm --version": ("--version",),
    "ivm no-such-command": ("no-such-command",),  # a usage error: one line, exit 2
}
FLOOR = "python -c 'import click'"


def _time(argv: list[str], expect: int) -> float:
    with clock() as c:
        done = subprocess.run(argv, capture_output=True, check=False)
    if done.returncode != expect:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()}")
    return c.seconds


def run(_lab: Lab | None, runs: int) -> dict[str, Any]:
    rounds = max(MIN_RUNS, runs)
    samples: dict[str, list[float]] = {FLOOR: [], **{k: [] for k in CASES}}
    for _ in range(rounds + 1):  # the first round warms the page cache and is dropped
        samples[FLOOR].append(_time([sys.executable, "-c", "import click"], 0))
        for label, args in CASES.items():
            samples[label].append(_time([*ivm_command(), *args], 2 if "no-such" in label else 0))
    figures = {label: Figure.of(values[1:]) for label, values in samples.items()}
    floor = figures.pop(FLOOR)
    return {
        "floor": floor,
        "commands": figures,
        "ratios": {label: fig.median / floor.median for label, fig in figures.items()},
        "runs": rounds,
    }
