"""Boot overhead: `ivm start` of the stand-in guest until its `IVM-REPORT done` console line, versus
plain qemu-system-x86_64 booting the same three disks with the same OVMF firmware and accelerator."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from lxml import etree
from tests.lab.console import ConsoleCapture
from tests.lab.daemon import virt_type

from bench.lab import BenchError, Lab
from bench.stats import Figure

DONE = "IVM-REPORT done"
TIMEOUT = 180.0  # a TCG boot takes ~10 s; room for a loaded machine


def ivm_boot(lab: Lab, name: str) -> tuple[float, float, dict[str, str]]:
    """`ivm start`, then the console until done. Returns (start to done, the command alone, firmware
    paths libvirt chose)."""
    started = time.monotonic()
    _out, command = lab.ivm("start", name)
    with ConsoleCapture(lab.uri, name) as console:
        live = etree.fromstring(lab.conn.lookupByName(name).XMLDesc(0).encode())
        nvram = live.find("os/nvram")
        firmware = {
            "code": live.findtext("os/loader") or "",
            "vars": nvram.get("template", "") if nvram is not None else "",
        }
        console.wait_done(TIMEOUT)  # also waits until the domain is shut off
        done_at = next((t for t, line in console.timed_lines if line.endswith(DONE)), None)
    if done_at is None:
        raise BenchError(f"{name}: no '{DONE}' line on the console")
    return done_at - started, command, firmware


def qemu_argv(lab: Lab, name: str, code: str, nvram: Path) -> list[str]:
    """The domain ivm defines, as a plain QEMU command line: q35, same CPU model, memory and disks."""
    accel = "kvm" if virt_type() == "kvm" else "tcg"
    cpu = "host" if accel == "kvm" else "qemu64"
    vol = lab.volume_path
    disks = [
        (vol(f"{name}-boot.qcow2"), "qcow2", "readonly=on", "bootindex=1"),
        (vol(f"{name}-var.qcow2"), "qcow2", "", "serial=var"),
        (vol(f"{name}-identity.img"), "raw", "readonly=on", "serial=identity"),
    ]
    argv = [
        "qemu-system-x86_64",
        "-machine", f"q35,accel={accel}",
        "-cpu", cpu,
        "-m", str(lab.machines[name]["memory_mib"]),
        "-smp", "1",
        "-no-user-config", "-nodefaults", "-display", "none", "-serial", "stdio",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
        "-drive", f"if=pflash,format=raw,unit=1,file={nvram}",
    ]  # fmt: skip
    for i, (path, fmt, ro, device) in enumerate(disks):
        argv += [
            "-drive",
            ",".join(filter(None, [f"file={path}", f"format={fmt}", "if=none", f"id=d{i}", ro])),
        ]
        argv += ["-device", f"virtio-blk-pci,drive=d{i},{device}"]
    return argv


def qemu_boot(argv: list[str]) -> float:
    """Run QEMU until the guest prints done and powers off; seconds from launch to the done line."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    watchdog = threading.Timer(TIMEOUT, proc.kill)
    watchdog.start()
    done_at = None
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            if DONE in raw.decode(errors="replace"):
                done_at = time.monotonic()
        proc.wait(30)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
    if done_at is None:
        raise BenchError(f"plain QEMU: no '{DONE}' line within {TIMEOUT:.0f} s")
    return done_at - started


def run(lab: Lab, runs: int) -> dict[str, Any]:
    name = lab.name("boot")
    lab.add_machines([name], var_size_gib=1)
    lab.ivm("create", name, "--image", str(lab.image("A")))
    lab.ivm("define", name)
    # Warm-ups, untimed: the first boot formats the var disk and makes the firmware variables.
    _s, _c, firmware = ivm_boot(lab, name)
    nvram = lab.work / "qemu-vars.fd"
    shutil.copyfile(firmware["vars"], nvram)
    argv = qemu_argv(lab, name, firmware["code"], nvram)
    qemu_boot(argv)
    ivm_s: list[float] = []
    start_s: list[float] = []
    qemu_s: list[float] = []
    for _ in range(runs):  # interleaved, so both see the same load
        seconds, command, _fw = ivm_boot(lab, name)
        ivm_s.append(seconds)
        start_s.append(command)
        qemu_s.append(qemu_boot(argv))
    lab.remove_vms([name])
    ivm, qemu = Figure.of(ivm_s), Figure.of(qemu_s)
    return {
        "ivm_start_to_done": ivm,
        "qemu_to_done": qemu,
        "ivm_start_command": Figure.of(start_s),
        "ratio": ivm.median / qemu.median,
        "firmware": firmware,
        "accelerator": "kvm" if virt_type() == "kvm" else "tcg",
        "qemu_argv": argv,
    }
