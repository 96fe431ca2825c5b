"""Fleet: `ivm create` + `ivm define` of N VMs in turn from one base, as a user's loop does; total and
per-VM time, and what each VM costs on disk right after (allocated blocks; the shared base apart)."""

from __future__ import annotations

from typing import Any

from bench.lab import Lab
from bench.stats import Figure, clock

SIZES = (1, 10, 25, 50)


def run(lab: Lab, runs: int, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    image = lab.image("A")
    seed = lab.name("fseed")
    lab.add_machines([seed])
    lab.ivm("create", seed, "--image", str(image))  # the base is imported before any figure
    base = lab.base_volumes()[0]
    base_bytes = lab.allocated([base])[base]
    lab.remove_vms([seed])

    totals: dict[int, list[float]] = {n: [] for n in sizes}
    per_vm_bytes: dict[int, list[float]] = {n: [] for n in sizes}
    refreshes: dict[int, list[float]] = {n: [] for n in sizes}
    create_s: list[float] = []
    define_s: list[float] = []
    volume_bytes: dict[str, list[float]] = {}
    for r in range(runs):
        for n in sizes:  # sizes interleaved within a run, so load drifts hit every size alike
            names = [lab.name(f"f{n}r{r}v{i}") for i in range(n)]
            lab.add_machines(names)
            with clock() as c:
                for name in names:
                    create_s.append(lab.ivm("create", name, "--image", str(image))[1])
                    define_s.append(lab.ivm("define", name)[1])
            totals[n].append(c.seconds)
            with clock() as refresh:  # every ivm run rescans the pool: its cost grows with the fleet
                lab.pool_obj().refresh(0)
            refreshes[n].append(refresh.seconds)
            vols = [name + s for name in names for s in ("-boot.qcow2", "-var.qcow2", "-identity.img")]
            allocated = lab.allocated(vols)
            per_vm_bytes[n].append(sum(allocated.values()) / n)
            for vol, size in allocated.items():
                volume_bytes.setdefault(vol.rsplit("-", 1)[1], []).append(size)
            lab.remove_vms(names)
    rows = []
    for n in sizes:
        total = Figure.of(totals[n])
        rows.append(
            {
                "vms": n,
                "total": total,
                "per_vm": Figure.of([t / n for t in totals[n]]),
                "bytes_per_vm": Figure.of(per_vm_bytes[n], "B"),
                "pool_bytes_per_vm": Figure.of([b + base_bytes / n for b in per_vm_bytes[n]], "B"),
                "pool_refresh": Figure.of(refreshes[n]),
            }
        )
    return {
        "rows": rows,
        "base_bytes": base_bytes,
        "ivm_create": Figure.of(create_s),
        "ivm_define": Figure.of(define_s),
        "volume_bytes": {kind: Figure.of(v, "B") for kind, v in sorted(volume_bytes.items())},
    }
