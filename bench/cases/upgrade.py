"""Upgrade downtime: `ivm upgrade` of 10 running VMs to another base; per VM, the time from shutdown
complete to start issued, as the tool reports it (`restarted after X s down`).

The stand-in guest powers itself off ~10 s after boot and ignores the ACPI button, so the VMs are
started and paused right away (libvirt calls a paused VM active: upgrade stops and restarts it), the
upgrade forces them off (`--force --timeout 0`), and a watcher pauses each restarted VM as soon as it
runs: ten TCG guests booting at once on two cores would otherwise slow the later VMs' upgrades,
which on a KVM host booting guests do not.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import libvirt

from bench.lab import BenchError, Lab
from bench.stats import Figure

VMS = 10
LINE = re.compile(r"^(\S+): base \w+ -> \w+, restarted after ([0-9.]+) s down$", re.MULTILINE)


@contextmanager
def pausing(uri: str, names: list[str]) -> Iterator[None]:
    """Pause any of `names` that is running, every 50 ms, while the block runs."""
    stop = threading.Event()

    def watch() -> None:
        conn = libvirt.open(uri)
        try:
            doms = [conn.lookupByName(n) for n in names]
            while not stop.wait(0.05):
                for dom in doms:
                    with contextlib.suppress(libvirt.libvirtError):  # it may stop meanwhile
                        if dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING:
                            dom.suspend()
        finally:
            conn.close()

    thread = threading.Thread(target=watch, name="pause-restarted", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def run(lab: Lab, runs: int) -> dict[str, Any]:
    images = [lab.image("A"), lab.image("B")]
    names = [lab.name(f"u{i}") for i in range(VMS)]
    seed = lab.name("useed")
    lab.add_machines([*names, seed], var_size_gib=1)
    lab.ivm("create", seed, "--image", str(images[1]))  # both bases in the pool before any figure
    lab.remove_vms([seed])
    for name in names:
        lab.ivm("create", name, "--image", str(images[0]))
        lab.ivm("define", name)
    downtimes: list[float] = []
    commands: list[float] = []
    for r in range(runs):
        target = images[(r + 1) % 2]  # A -> B, B -> A, ...
        for name in names:
            dom = lab.conn.lookupByName(name)
            dom.create()
            dom.suspend()
        with pausing(lab.uri, names):
            out, seconds = lab.ivm(
                "upgrade",
                *names,
                "--image",
                str(target),
                "--force",
                "--timeout",
                "0",
                "--health-timeout",
                "0",
            )
        found = dict(LINE.findall(out))
        if sorted(found) != sorted(names):
            raise BenchError(f"ivm upgrade restarted {len(found)} of {VMS} VMs:\n{out}")
        downtimes += [float(v) for v in found.values()]
        commands.append(seconds)
        for name in names:
            with contextlib.suppress(libvirt.libvirtError):
                lab.conn.lookupByName(name).destroy()
    lab.remove_vms(names)
    return {"vms": VMS, "downtime_per_vm": Figure.of(downtimes), "upgrade_command": Figure.of(commands)}
