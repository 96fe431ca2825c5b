"""Fleet: N VMs from one base, created and defined two ways taking turns in each run: `ivm create` +
`ivm define` once per VM, as a user's loop does, and one `ivm create NAME...` followed by one
`ivm define NAME...` (one connection per hypervisor); total and per-VM time of each, their ratio,
and what each VM costs on disk right after (allocated blocks; the shared base apart).

Target: at the largest size, the two commands take at most a third of the loop's time."""

from __future__ import annotations

from typing import Any

from bench.lab import Lab
from bench.stats import Figure, clock

SIZES = (1, 10, 25, 50)
SUFFIXES = ("-boot.qcow2", "-var.qcow2", "-identity.img")


def run(lab: Lab, runs: int, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    image = lab.image("A")
    seed = lab.name("fseed")
    lab.add_machines([seed])
    lab.ivm("create", seed, "--image", str(image))  # the base is imported before any figure
    base = lab.base_volumes()[0]
    base_bytes = lab.allocated([base])[base]
    lab.remove_vms([seed])

    totals: dict[int, list[float]] = {n: [] for n in sizes}
    one_command: dict[int, list[float]] = {n: [] for n in sizes}
    per_vm_bytes: dict[int, list[float]] = {n: [] for n in sizes}
    refreshes: dict[int, list[float]] = {n: [] for n in sizes}
    create_s: list[float] = []
    define_s: list[float] = []
    volume_bytes: dict[str, list[float]] = {}

    def separate(names: list[str]) -> float:
        with clock() as c:
            for name in names:
                create_s.append(lab.ivm("create", name, "--image", str(image))[1])
                define_s.append(lab.ivm("define", name)[1])
        return c.seconds

    def together(names: list[str]) -> float:
        with clock() as c:
            lab.ivm("create", *names, "--image", str(image))
            lab.ivm("define", *names)
        return c.seconds

    for r in range(runs):
        for n in sizes:  # sizes interleaved within a run, so load drifts hit every size alike
            # the two ways alternate which goes first, so neither always meets a warmer daemon
            ways = [("s", separate, totals[n]), ("m", together, one_command[n])]
            for label, way, into in ways if r % 2 == 0 else ways[::-1]:
                names = [lab.name(f"f{n}r{r}{label}{i}") for i in range(n)]
                lab.add_machines(names)
                into.append(way(names))
                if label == "s":
                    with clock() as refresh:  # every ivm run rescans the pool: its cost grows with the fleet
                        lab.pool_obj().refresh(0)
                    refreshes[n].append(refresh.seconds)
                    allocated = lab.allocated([name + s for name in names for s in SUFFIXES])
                    per_vm_bytes[n].append(sum(allocated.values()) / n)
                    for vol, size in allocated.items():
                        volume_bytes.setdefault(vol.rsplit("-", 1)[1], []).append(size)
                lab.remove_vms(names)
    rows = []
    for n in sizes:
        rows.append(
            {
                "vms": n,
                "total": Figure.of(totals[n]),
                "per_vm": Figure.of([t / n for t in totals[n]]),
                "one_command_total": Figure.of(one_command[n]),
                "one_command_per_vm": Figure.of([t / n for t in one_command[n]]),
                # run by run: both ways of one run met the same load
                "one_command_ratio": Figure.of(
                    [m / s for m, s in zip(one_command[n], totals[n], strict=True)], "x"
                ),
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
