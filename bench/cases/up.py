"""`ivm up` against `virt-install --import` doing the same job, with the base already in the pool,
and the daemon's floor (a bare `virsh define` + `virsh start` of ivm's own domain XML).

ivm up: generates machine-id, hostname and an SSH host key pair (ssh-keygen), makes the boot
overlay on the base, the identity disk (mkfs.ext4 -d, uploaded) and a 20 GiB var disk, defines
the domain (UEFI, secure boot off) and starts it.
virt-install: ssh-keygen of a host key, then `virt-install --import` with the same two disks made
by it through the same pool (an overlay with the base as backing store, read-only, and a 20 GiB
qcow2 with serial `var`), the identity as a `--cloud-init` seed (hostname, host key, authorized
key; virt-install builds the ISO with xorrisofs), the same memory, vCPUs, firmware and virt type,
no network, no graphics, `--noautoconsole --wait 0` (it returns once the VM is started).
Each side's VM is powered off and removed after its run; the two sides take turns."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import libvirt
from tests.lab.daemon import virt_type

from bench.cases.profile import profile_command
from bench.lab import BenchError, Lab
from bench.stats import Figure, clock

AUTHORIZED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIg1El8h+IR/7iF8FBigHB867NLB9MuiAxwmrBL1GJmQ bench"


def _timed(argv: list[str]) -> float:
    with clock() as c:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    if done.returncode != 0:
        raise BenchError(f"{argv[0]} exited {done.returncode}: {done.stderr.strip()[-600:]}")
    return c.seconds


def virt_install(lab: Lab, name: str, base: Path, work: Path) -> dict[str, float]:
    key = work / "ssh_host_ed25519_key"
    keygen = _timed(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)])
    user_data = work / "user-data"
    user_data.write_text(
        "#cloud-config\n"
        f"hostname: {name}\n"
        "ssh_keys:\n"
        "  ed25519_private: |\n"
        + "".join(f"    {line}\n" for line in key.read_text().splitlines())
        + f"  ed25519_public: {key.with_suffix('.pub').read_text().strip()}\n"
        f"ssh_authorized_keys:\n  - {AUTHORIZED}\n"
    )
    meta_data = work / "meta-data"
    meta_data.write_text(f"instance-id: {name}\nlocal-hostname: {name}\n")
    machine = lab.machines[name]
    info = subprocess.run(["qemu-img", "info", "--output=json", str(base)], capture_output=True, check=True)
    size_gib = json.loads(info.stdout)["virtual-size"] / 1024**3
    argv = [
        "virt-install",
        "--connect", lab.uri,
        "--name", name,
        "--memory", str(machine["memory_mib"]),
        "--vcpus", str(machine["vcpus"]),
        "--virt-type", virt_type(),
        "--import",
        "--osinfo", "detect=on,require=off",
        "--boot", "uefi,firmware.feature0.name=secure-boot,firmware.feature0.enabled=no",
        "--disk",
        f"path={lab.pool_path / (name + '-vi-boot.qcow2')},size={size_gib:.6f},format=qcow2,"
        f"backing_store={base},"
        "backing_format=qcow2,bus=virtio,readonly=on",
        "--disk",
        f"path={lab.pool_path / (name + '-vi-var.qcow2')},size={machine['var_size_gib']},format=qcow2,"
        "sparse=yes,bus=virtio,serial=var",
        "--cloud-init", f"user-data={user_data},meta-data={meta_data}",
        "--network", "none",
        "--graphics", "none",
        "--wait", "0",  # implies --noautoconsole
    ]  # fmt: skip
    install = _timed(argv)
    return {"ssh-keygen": keygen, "virt-install --import": install, "total": keygen + install}


def daemon_floor(lab: Lab, name: str) -> float:
    """virsh define + virsh start of the domain ivm defined for `name` (its disks still there)."""
    dom = lab.conn.lookupByName(name)
    xml = dom.XMLDesc(2)  # inactive
    dom.destroy()
    dom.undefineFlags(4)  # VIR_DOMAIN_UNDEFINE_NVRAM
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
        f.write(xml)
        f.flush()
        with clock() as c:
            _timed(["virsh", "-c", lab.uri, "define", f.name])
            _timed(["virsh", "-c", lab.uri, "start", name])
    return c.seconds


BOOT_DIR = Path("/var/lib/libvirt/boot")  # libvirt's package makes it; virt-install's seed pool


def remove_cloud_init_seeds(lab: Lab, pool_existed: bool, dir_existed: bool) -> None:
    """virt-install --cloud-init leaves its seed ISO and data in libvirt's `boot` pool
    (/var/lib/libvirt/boot), making the pool if it was missing: take back what this run added.
    The folder stays unless this run made it (virt-install cannot start the pool without it)."""
    try:
        pool = lab.conn.storagePoolLookupByName("boot")
    except libvirt.libvirtError:
        pool = None
    if pool is not None:
        if pool.isActive():
            pool.refresh(0)
            for vol in pool.listAllVolumes():
                if vol.name().startswith("virtinst-"):
                    vol.delete(0)
        if not pool_existed:
            if pool.isActive():
                pool.destroy()
            pool.undefine()
    if not dir_existed:
        shutil.rmtree(BOOT_DIR, ignore_errors=True)


def boot_pool_exists(lab: Lab) -> bool:
    return "boot" in lab.conn.listStoragePools() + lab.conn.listDefinedStoragePools()


def run(lab: Lab, runs: int) -> dict[str, Any]:
    boot_pool_existed, boot_dir_existed = boot_pool_exists(lab), BOOT_DIR.is_dir()
    BOOT_DIR.mkdir(mode=0o711, exist_ok=True)  # a run before this fix removed it with the pool
    try:
        return _measure(lab, runs)
    finally:
        remove_cloud_init_seeds(lab, boot_pool_existed, boot_dir_existed)


def _measure(lab: Lab, runs: int) -> dict[str, Any]:
    image = lab.image("A")
    seed = lab.name("useed")
    lab.add_machines([seed])
    lab.ivm("create", seed, "--image", str(image))  # the base is imported before any figure
    base = lab.pool_path / lab.base_volumes()[0]
    lab.remove_vms([seed])
    up_s: list[float] = []
    vi_s: dict[str, list[float]] = {}
    floor_s: list[float] = []
    for r in range(runs):
        mine, theirs = lab.name(f"u{r}"), lab.name(f"v{r}")
        lab.add_machines([mine, theirs])
        try:
            up_s.append(lab.ivm("up", mine, "--image", str(image))[1])
            floor_s.append(daemon_floor(lab, mine))
            with tempfile.TemporaryDirectory(dir=lab.work) as tmp:
                for step, seconds in virt_install(lab, theirs, base, Path(tmp)).items():
                    vi_s.setdefault(step, []).append(seconds)
        finally:
            lab.remove_vms([mine, theirs])
            for suffix in ("-vi-boot.qcow2", "-vi-var.qcow2"):
                lab.delete_volume(theirs + suffix)
    prof = lab.name("uprof")
    lab.add_machines([prof])
    try:
        profile = profile_command(lab, ["up", prof, "--image", str(image)], lab.work / "up.prof")
    finally:
        lab.remove_vms([prof])
    ivm_up, total = Figure.of(up_s), Figure.of(vi_s.pop("total"))
    return {
        "ivm_up": ivm_up,
        "virt_install": total,
        "virt_install_parts": {k: Figure.of(v) for k, v in vi_s.items()},
        "daemon_floor": Figure.of(floor_s),
        "ratio": ivm_up.median / total.median,
        "profile": profile,
    }
