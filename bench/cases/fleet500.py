"""A 500-VM fleet on one host: create and define N VMs (not started), then time `ivm list`,
`ivm status` and `ivm status --json` over all of them (whole process, peak memory).

The VMs are made in this process through ivm's own library, one session per VM as the CLI opens
it (`create` then `define`), because 1,000 CLI runs would take most of an hour here; the fleet
case measures the same two commands through the CLI up to 50 VMs. Time and disk per VM are taken
at checkpoints on the way to N, for the fleet plot."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from typing import Any

from bench.lab import BenchError, Lab
from bench.stats import Figure, clock
from ivm.config import Settings
from ivm.ops import define as define_ops
from ivm.ops import provision
from ivm.ops.session import vm_session

CHECKPOINTS = (1, 10, 50, 100, 250, 500)
COMMANDS = {
    "ivm list": ("list",),
    "ivm status": ("status",),
    "ivm status --json": ("status", "--json"),
}


def timed_with_memory(lab: Lab, args: tuple[str, ...]) -> tuple[str, float, int]:
    """stdout, wall seconds and peak resident memory (bytes) of one `ivm ARGS` run."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        with clock() as c:
            proc = subprocess.Popen(lab.ivm_argv(*args), stdout=out, stderr=err, env=lab.env())
            _pid, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, problem = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise BenchError(f"ivm {' '.join(args)} exited {proc.returncode}: {problem.strip()}")
    return text, c.seconds, usage.ru_maxrss * 1024


def run(lab: Lab, runs: int, size: int = 500) -> dict[str, Any]:
    image = lab.image("A")
    names = [lab.name(f"h{i:03d}") for i in range(size)]
    lab.add_machines(names)
    env = lab.env()
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME",)}
    os.environ["XDG_CACHE_HOME"] = env["XDG_CACHE_HOME"]
    settings = Settings.from_env(env, machines_file=lab.machines_file, root=lab.root)
    checkpoints = sorted({n for n in CHECKPOINTS if n <= size} | {size})
    rows: list[dict[str, Any]] = []
    try:
        with vm_session(settings, names[0]) as s:  # the base imported before any figure
            provision.create(s, image)
        elapsed = 0.0
        for i, name in enumerate(names, start=1):
            with clock() as c, vm_session(settings, name) as s:
                provision.create(s, image)
                define_ops.define(s)
            elapsed += c.seconds
            if i in checkpoints:
                vols = [n + s for n in names[:i] for s in ("-boot.qcow2", "-var.qcow2", "-identity.img")]
                disk = sum(lab.allocated(vols).values())
                rows.append({"vms": i, "seconds": elapsed, "per_vm_s": elapsed / i, "bytes_per_vm": disk / i})
        commands: dict[str, Any] = {}
        for _ in range(max(runs, 5)):  # the three commands take turns
            for label, args in COMMANDS.items():
                text, seconds, rss = timed_with_memory(lab, args)
                entry = commands.setdefault(label, {"s": [], "rss": []})
                entry["s"].append(seconds)
                entry["rss"].append(rss)
                if label.endswith("--json") and len(json.loads(text)) != size:
                    raise BenchError(f"ivm status --json listed {len(json.loads(text))} VMs, not {size}")
        figures = {
            label: {"time": Figure.of(v["s"]), "peak_memory": Figure.of(v["rss"], "B")}
            for label, v in commands.items()
        }
    finally:
        lab.remove_vms(names)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {"vms": size, "checkpoints": rows, "commands": figures}
