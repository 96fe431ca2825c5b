"""Provision one VM with its base already in the pool: `ivm create` versus the specification's path by
hand (two `qemu-img create` and a guestfish copy of the identity files into the var disk)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.lab.daemon import virt_type

from bench.lab import BenchError, Lab
from bench.stats import Figure, clock

VAR_SIZE = "20G"  # the specification's var disk, also the bench machines' var_size_gib


def guestfish_env() -> dict[str, str]:
    env = dict(os.environ, LIBGUESTFS_BACKEND="direct")
    if virt_type() == "qemu":  # KVM unusable here: libguestfs' appliance must run under TCG
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    return env


def _run(argv: list[str], stdin: str | None = None) -> float:
    with clock() as c:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, env=guestfish_env(), check=False
        )
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv[:3])} ... exited {done.returncode}: {done.stderr.strip()}")
    return c.seconds


def spec_path(base: Path, identity_dir: Path, dest: Path) -> dict[str, float]:
    """The specification's create-vm, step by step; seconds per step."""
    dest.mkdir(parents=True)
    boot, var = dest / "boot.qcow2", dest / "var.qcow2"
    files = sorted(str(p) for p in identity_dir.iterdir() if p.is_file())
    # A blank var disk has no filesystem for the files to go to: guestfish makes one first.
    script = (
        "run\nmkfs ext4 /dev/sda\nmount /dev/sda /\nmkdir-p /identity\n"
        f"copy-in {' '.join(files)} /identity\n"
        "chown 0 0 /identity/ssh_host_ed25519_key\nchmod 0600 /identity/ssh_host_ed25519_key\n"
    )
    return {
        "qemu-img create boot": _run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(boot)]
        ),
        "qemu-img create var": _run(["qemu-img", "create", "-q", "-f", "qcow2", str(var), VAR_SIZE]),
        "guestfish copy-in": _run(["guestfish", "--rw", "-a", str(var)], stdin=script),
    }


def run(lab: Lab, runs: int) -> dict[str, Any]:
    image = lab.image("A")
    seed = lab.name("seed")
    lab.add_machines([seed])
    lab.ivm("create", seed, "--image", str(image))  # imports the base: excluded from the figures
    base = lab.volume_path(lab.base_volumes()[0])
    spec_dir = lab.work / "spec"
    # Warm-up, untimed: guestfish builds its appliance on first use (minutes), then caches it.
    with clock() as warmup:
        spec_path(base, lab.root / "machines" / seed, spec_dir / "warmup")

    names = [lab.name(f"p{i}") for i in range(runs)]
    lab.add_machines(names)
    ivm_s: list[float] = []
    spec_s: list[float] = []
    parts: dict[str, list[float]] = {}
    for name in names:
        _out, seconds = lab.ivm("create", name, "--image", str(image))
        ivm_s.append(seconds)
        steps = spec_path(base, lab.root / "machines" / name, spec_dir / name)
        spec_s.append(sum(steps.values()))
        for step, s in steps.items():
            parts.setdefault(step, []).append(s)
    identity_files = sorted(p.name for p in (lab.root / "machines" / names[0]).iterdir())
    lab.remove_vms([*names, seed])
    shutil.rmtree(spec_dir)
    ivm, spec = Figure.of(ivm_s), Figure.of(spec_s)
    return {
        "ivm_create": ivm,
        "spec_path": spec,
        "spec_parts": {k: Figure.of(v) for k, v in parts.items()},
        "speedup": spec.median / ivm.median,
        "guestfish_warmup_s": warmup.seconds,
        "identity_files": identity_files,
    }
