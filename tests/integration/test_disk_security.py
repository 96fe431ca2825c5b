"""Disks on the real daemon, attacked: the QEMU user after a VM stops (owner and mode of the
read-only disks), a base volume with an external data file, and deleted identity images."""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from ivm.hypervisor.security import UID_RANGE
from tests.integration.conftest import Fleet, Images, vm_name

QEMU_USER = "libvirt-qemu"


def qemu_uid() -> int:
    try:
        return pwd.getpwnam(QEMU_USER).pw_uid
    except KeyError:
        pytest.skip(f"no {QEMU_USER} user on this host")


def as_qemu_user(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run argv as the daemon's QEMU user with its own group only (what a hijacked QEMU could do)."""
    cmd = ["setpriv", "--reuid", QEMU_USER, "--regid", QEMU_USER, "--clear-groups", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)


def owner_mode(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_uid, stat.S_IMODE(info.st_mode)


def created(fleet: Fleet, images: Images, prefix: str) -> str:
    if os.getuid() != 0:
        pytest.skip("the qemu:///system ownership checks need root")
    name = fleet.add(vm_name(prefix))
    fleet.ivm("create", name, "--image", str(images.a))
    fleet.ivm("define", name)
    return name


def base_of(fleet: Fleet) -> Path:
    return fleet.volume_path(next(v for v in fleet.volumes() if v.startswith("base-")))


def own_uid(fleet: Fleet, name: str) -> int | None:
    conn = fleet.conn()
    try:
        xml = conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    finally:
        conn.close()
    label = etree.fromstring(xml.encode()).find("seclabel[@model='dac'][@type='static']/label")
    return int(label.text.split(":")[0].lstrip("+")) if label is not None and label.text else None


def test_after_a_vm_stops_the_qemu_user_reads_no_key_and_writes_no_base(fleet: Fleet, images: Images) -> None:
    qemu = qemu_uid()
    name = created(fleet, images, "dac")
    uid = own_uid(fleet, name)
    assert uid is not None and uid in UID_RANGE  # this host has no MAC driver: the VM gets its own uid

    report = fleet.boot(name)  # the stand-in reports its disks, then powers off
    assert report.marker == "A" and not report.errors
    assert report.disk(None).readonly and report.disk("identity").readonly and not report.disk("var").readonly
    assert report.identity_lines["hostname"] == (name,)

    base, boot = base_of(fleet), fleet.volume_path(f"{name}-boot.qcow2")
    identity, var = fleet.volume_path(f"{name}-identity.img"), fleet.volume_path(f"{name}-var.qcow2")
    assert owner_mode(base) == (0, 0o644) and owner_mode(boot) == (0, 0o644)
    assert owner_mode(identity) in ((0, 0o600), (uid, 0o600)) and owner_mode(identity)[0] != qemu
    assert owner_mode(var)[0] == 0

    read = as_qemu_user("cat", str(identity))
    assert read.returncode != 0 and "Permission denied" in read.stderr
    write = as_qemu_user("sh", "-c", f"printf x >> {base}")
    assert write.returncode != 0 and "Permission denied" in write.stderr
    assert as_qemu_user("head", "-c", "0", str(base)).returncode == 0  # the control: it may read the base


def test_status_reports_ownership_drift_and_start_repairs_it(fleet: Fleet, images: Images) -> None:
    qemu = qemu_uid()
    name = created(fleet, images, "drift")
    base, identity = base_of(fleet), fleet.volume_path(f"{name}-identity.img")
    os.chown(base, qemu, -1)
    base.chmod(0o666)
    os.chown(identity, qemu, -1)
    identity.chmod(0o644)

    row = json.loads(fleet.ivm("status", name, "--json", "--no-eval").stdout)[0]
    assert sorted(line.split(":")[0] for line in row["ownership"]) == sorted([base.name, identity.name])
    assert f"drift: {base.name}: owner uid {qemu} mode 0666" in fleet.ivm("status", name, "--no-eval").stdout

    fleet.ivm("start", name)  # repairs before starting (the boot itself is the test above)
    conn = fleet.conn()
    try:
        conn.lookupByName(name).destroy()
    finally:
        conn.close()
    assert owner_mode(base) == (0, 0o644)
    assert owner_mode(identity)[1] == 0o600 and owner_mode(identity)[0] != qemu
    assert json.loads(fleet.ivm("status", name, "--json", "--no-eval").stdout)[0]["ownership"] == []


def test_a_base_volume_with_an_external_data_file_is_not_used(
    fleet: Fleet, images: Images, tmp_path: Path
) -> None:
    """Someone rewrote the pool's base so its clusters come from another VM's identity image."""
    first = created(fleet, images, "df")
    base = base_of(fleet)
    victim = fleet.volume_path(f"{first}-identity.img")
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={victim}", str(base), "64M"], check=True
    )
    second = fleet.add(vm_name("df"))
    r = fleet.ivm("create", second, "--image", str(images.a), check=False)
    assert r.returncode == 1 and "refers to an external data file; ivm will not use it" in r.stderr
    assert f"{second}-boot.qcow2" not in fleet.volumes()


def test_deleted_identity_images_are_wiped_first(fleet: Fleet, images: Images) -> None:
    """An open descriptor keeps the deleted inode: what it reads afterwards is what a disk scan finds."""
    name = created(fleet, images, "wipe")
    path = fleet.volume_path(f"{name}-identity.img")
    (fleet.root / "machines" / name / "tcp_ports").write_text("8443\n")
    with path.open("rb") as before_upgrade:
        assert b"OPENSSH PRIVATE KEY" in before_upgrade.read()
        fleet.ivm("upgrade", name, "--image", str(images.a))  # rebuilds the identity image
        before_upgrade.seek(0)
        assert before_upgrade.read().strip(b"\0") == b""
    with path.open("rb") as before_destroy:
        fleet.ivm("destroy", name)
        assert not path.exists()
        assert before_destroy.read().strip(b"\0") == b""
