"""The host tool end to end on a real libvirt daemon, with a stand-in guest that boots under UEFI
from the read-only overlay and reports what it sees: create, define, start, stop, destroy."""

from __future__ import annotations

import json
import subprocess

from tests.integration.conftest import Fleet, Images, vm_name


def qemu_img_chain(path: str) -> list[dict[str, object]]:
    out = subprocess.run(
        ["qemu-img", "info", "--backing-chain", "--output=json", "-U", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    chain: list[dict[str, object]] = json.loads(out)
    return chain


def test_create_define_start_boot_and_keep_data(fleet: Fleet, images: Images) -> None:
    name = fleet.add(vm_name())
    r = fleet.ivm("create", name, "--image", str(images.a))
    assert f"{name}: created {name}-boot.qcow2" in r.stdout and "generated ssh_host_ed25519_key" in r.stdout
    vols = fleet.volumes()
    bases = [v for v in vols if v.startswith("base-")]
    assert len(bases) == 1 and {f"{name}-boot.qcow2", f"{name}-var.qcow2", f"{name}-identity.img"} <= set(
        vols
    )

    # the overlay points at the base, both qcow2 (design: backing store with its format)
    chain = qemu_img_chain(str(fleet.volume_path(f"{name}-boot.qcow2")))
    assert chain[0]["format"] == "qcow2" and chain[0]["backing-filename-format"] == "qcow2"
    assert chain[0]["backing-filename"] == str(fleet.volume_path(bases[0])) and chain[1]["format"] == "qcow2"
    assert (fleet.volume_path(f"{name}-identity.img").stat().st_mode & 0o777) == 0o600

    # idempotent: a second create changes nothing
    again = fleet.ivm("create", name, "--image", str(images.a))
    assert "already created" in again.stdout and fleet.volumes() == vols

    assert f"{name}: defined" in fleet.ivm("define", name).stdout
    assert "definition unchanged" in fleet.ivm("define", name).stdout

    first = fleet.boot(name)
    assert first.efi and first.marker == "A" and not first.errors
    assert first.disk(None).readonly and first.boot_write == "denied"
    assert not first.disk("var").readonly and first.disk("identity").readonly
    assert first.var_formatted is True and first.var_counter == 1
    files = first.identity_files
    key = files["ssh_host_ed25519_key"]
    assert key.mode == 0o600 and (key.uid, key.gid) == (0, 0)
    assert files["machine-id"].mode == 0o644
    machine_id = (fleet.root / "machines" / name / "machine-id").read_text().strip()
    assert first.identity_lines["machine-id"] == (machine_id,)
    assert first.identity_lines["hostname"] == (name,)

    second = fleet.boot(name)
    assert second.var_formatted is False and second.var_counter == 2

    assert "already stopped" in fleet.ivm("stop", name).stdout

    # destroy keeps the var disk; create + define + start bring the VM back with its data
    r = fleet.ivm("destroy", name)
    assert f"kept its data on {name}-var.qcow2" in r.stdout
    assert f"{name}-var.qcow2" in fleet.volumes() and f"{name}-boot.qcow2" not in fleet.volumes()
    r = fleet.ivm("create", name, "--image", str(images.a))
    assert f"kept {name}-var.qcow2" in r.stdout
    fleet.ivm("define", name)
    assert fleet.boot(name).var_counter == 3

    fleet.ivm("destroy", name, "--delete-data")
    assert [v for v in fleet.volumes() if v.startswith(name)] == []


def test_up_is_one_command_and_repeatable(fleet: Fleet, images: Images) -> None:
    name = fleet.add(vm_name())
    fleet.ivm("up", name, "--image", str(images.a))
    r = fleet.ivm("up", name, "--image", str(images.a))
    assert "already created" in r.stdout and "definition unchanged" in r.stdout
    fleet.ivm("stop", name, "--force", "--timeout", "1")
    status = json.loads(fleet.ivm("status", name, "--json").stdout)
    assert status[0]["state"] == "shut off" and status[0]["base"]


def test_stop_times_out_then_forces(fleet: Fleet, images: Images) -> None:
    name = fleet.add(vm_name())
    fleet.ivm("create", name, "--image", str(images.a))
    fleet.ivm("define", name)
    fleet.ivm("start", name)
    # the firmware ignores the ACPI button: a graceful stop cannot finish in 1 s
    r = fleet.ivm("stop", name, "--timeout", "1", check=False)
    # One line says what it waits for and how long, then the one-line error with the way out.
    waiting, error = r.stderr.strip().splitlines()
    assert waiting == f"ivm: waiting up to 1 s for {name} to shut down (ACPI power button)"
    assert r.returncode == 1 and error.startswith("ivm: error: ") and "--force" in error
    destroy = fleet.ivm("destroy", name, check=False)
    assert destroy.returncode == 1 and "is running" in destroy.stderr
    assert "powered off (forced)" in fleet.ivm("stop", name, "--force", "--timeout", "1").stdout


def test_two_vms_share_one_base(fleet: Fleet, images: Images) -> None:
    a, b = fleet.add(vm_name("a")), fleet.add(vm_name("b"))
    fleet.ivm("create", a, "--image", str(images.a))
    fleet.ivm("create", b, "--image", str(images.a))
    assert len([v for v in fleet.volumes() if v.startswith("base-")]) == 1
    overlay = fleet.volume_path(f"{b}-boot.qcow2").stat().st_blocks * 512
    assert overlay < 2 * 1024 * 1024  # a thin overlay, the base is counted once
