"""Where the tool's time goes: import time of the CLI (`python -X importtime`), and a cProfile of one
`ivm create` (base already in the pool) and one `ivm define`, grouped into a few buckets."""

from __future__ import annotations

import pstats
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.lab import BenchError, Lab
from bench.stats import Figure

IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def import_time(runs: int) -> dict[str, Any]:
    totals: list[float] = []
    selfs: dict[str, list[int]] = {}
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import ivm.cli"],
            capture_output=True,
            text=True,
            check=True,
        )
        total = 0
        for self_us, cumulative_us, indent, module in IMPORT_LINE.findall(done.stderr):
            selfs.setdefault(module, []).append(int(self_us))
            if module == "ivm.cli" and len(indent) == 1:  # the top-level import, not a nested one
                total = int(cumulative_us)
        totals.append(total / 1e6)
    # packages by top-level name, so "libvirt" covers libvirt and libvirtmod
    by_package: dict[str, float] = {}
    for module, values in selfs.items():
        top = module.split(".")[0]
        by_package[top] = by_package.get(top, 0.0) + sorted(values)[len(values) // 2] / 1e6
    heaviest = sorted(by_package.items(), key=lambda kv: -kv[1])[:10]
    return {"import_ivm_cli": Figure.of(totals), "by_package_s": dict(heaviest)}


def _cumulative(stats: pstats.Stats, match: Any) -> float:
    found = [v[3] for k, v in stats.stats.items() if match(k)]  # type: ignore[attr-defined]
    return max(found, default=0.0)


def profile_command(lab: Lab, args: list[str], out: Path) -> dict[str, Any]:
    argv = lab.ivm_argv(*args)
    argv = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "ivm", *argv[argv.index("--machines") :]]
    done = subprocess.run(argv, capture_output=True, text=True, env=lab.env(), check=False)
    if done.returncode != 0:
        raise BenchError(f"profiling ivm {' '.join(args)} failed: {done.stderr.strip()}")
    stats = pstats.Stats(str(out))
    total: float = stats.total_tt  # type: ignore[attr-defined]
    table = stats.stats  # type: ignore[attr-defined]
    libvirt_calls = sum(v[2] for k, v in table.items() if "libvirtmod." in k[2])
    buckets = {
        "imports": _cumulative(stats, lambda k: k[2] == "_find_and_load"),
        "subprocesses (qemu-img, ssh-keygen, mkfs.ext4)": _cumulative(
            stats, lambda k: k[0].endswith("subprocess.py") and k[2] == "run"
        ),
        "libvirt calls (time in libvirtmod)": libvirt_calls,
        "image content hash": _cumulative(
            stats, lambda k: k[0].endswith("ivm/image.py") and k[2] == "content_hash"
        ),
    }
    buckets["rest"] = max(total - sum(buckets.values()), 0.0)
    own = sorted(
        (
            (f"{Path(k[0]).parent.name}/{Path(k[0]).name}:{k[2]}", v[3])
            for k, v in table.items()
            if "/ivm/" in k[0]
        ),
        key=lambda kv: -kv[1],
    )
    return {"total_s": total, "buckets_s": buckets, "top_ivm_functions_s": dict(own[:15])}


def run(lab: Lab, runs: int) -> dict[str, Any]:
    name = lab.name("prof")
    lab.add_machines([name])
    image = lab.image("A")
    if not lab.base_volumes():
        seed = lab.name("pseed")
        lab.add_machines([seed])
        lab.ivm("create", seed, "--image", str(image))
        lab.remove_vms([seed])
    result = {
        **import_time(runs),
        "create": profile_command(lab, ["create", name, "--image", str(image)], lab.work / "create.prof"),
        "define": profile_command(lab, ["define", name], lab.work / "define.prof"),
    }
    lab.remove_vms([name])
    return result
