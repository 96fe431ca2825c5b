"""Prove the integration harness on its own: a hand-written domain boots the stand-in guest twice.

No ivm code here: if this fails, the harness (daemon, image, console) is at fault, not the tool.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.lab.console import ConsoleCapture
from tests.lab.daemon import remove_domain_logs, virt_type
from tests.lab.pool import scratch_pool_dir
from tests.lab.report import Report, parse_report
from tests.lab.standin import build_standin_image

pytestmark = pytest.mark.integration

IDENTITY = {
    "hostname": ("harness\n", 0o644),
    "machine-id": ("0123456789abcdef0123456789abcdef\n", 0o644),
    "tcp_ports": ("22\n80\n", 0o644),
    "ssh_host_ed25519_key": ("not a real key, and never printed\n", 0o600),
    "ssh_host_ed25519_key.pub": ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI harness\n", 0o644),
}


@pytest.fixture(scope="module")
def conn(system_uri: str) -> Iterator[Any]:
    connection = libvirt.open(system_uri)
    yield connection
    connection.close()


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def _identity_image(dest: Path, work: Path) -> None:
    """A small ext4 holding the identity files, made like ivm makes it: mkfs.ext4 -d."""
    work.mkdir()
    for name, (text, mode) in IDENTITY.items():
        (work / name).write_text(text)
        (work / name).chmod(mode)
    subprocess.run(
        ["mkfs.ext4", "-q", "-d", str(work), "-L", "identity", str(dest), "4M"],
        check=True,
        capture_output=True,
        env={**os.environ, "PATH": os.environ["PATH"] + ":/usr/sbin:/sbin"},  # mkfs.ext4 is in sbin
    )


def _disk(path: Path, fmt: str, dev: str, *, serial: str = "", readonly: bool = False) -> str:
    return (
        f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/>"
        f"<source file='{path}'/><target dev='{dev}' bus='virtio'/>"
        + (f"<serial>{serial}</serial>" if serial else "")
        + ("<readonly/>" if readonly else "")
        + ("<boot order='1'/>" if dev == "vda" else "")
        + "</disk>"
    )


def _domain_xml(name: str, pool: Path) -> str:
    return f"""
<domain type='{virt_type()}'>
  <name>{name}</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <os firmware='efi'>
    <type arch='x86_64' machine='q35'>hvm</type>
    <firmware><feature enabled='no' name='secure-boot'/></firmware>
  </os>
  <features><acpi/></features>
  <devices>
    {_disk(pool / "boot.qcow2", "qcow2", "vda", readonly=True)}
    {_disk(pool / "var.qcow2", "qcow2", "vdb", serial="var")}
    {_disk(pool / "identity.img", "raw", "vdc", serial="identity", readonly=True)}
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>"""


@pytest.fixture(scope="module")
def domain(conn: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A defined (not started) domain on a base, overlay, var and identity disk in a scratch pool."""
    images = tmp_path_factory.mktemp("standin")
    image = build_standin_image(images / "a.img", "A")
    with scratch_pool_dir() as path:
        pool = conn.storagePoolCreateXML(
            f"<pool type='dir'><name>{path.name}</name><target><path>{path}</path></target></pool>", 0
        )
        dom = None
        try:
            _qemu_img("convert", "-O", "qcow2", str(image), str(path / "base.qcow2"))
            base = ("-F", "qcow2", "-b", str(path / "base.qcow2"))
            _qemu_img("create", "-q", "-f", "qcow2", *base, str(path / "boot.qcow2"))
            _qemu_img("create", "-q", "-f", "qcow2", str(path / "var.qcow2"), "64M")
            _identity_image(path / "identity.img", images / "identity")
            pool.refresh(0)
            dom = conn.defineXML(_domain_xml(f"ivm-harness-{os.getpid()}", path))
            yield dom
        finally:
            try:
                if dom is not None:
                    _stop(dom)
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
                    remove_domain_logs(conn.getURI(), [f"ivm-harness-{os.getpid()}"])
            finally:
                pool.destroy()  # a transient pool: destroying it also forgets it


def _stop(dom: Any) -> None:
    try:
        dom.destroy()
    except libvirt.libvirtError:
        if dom.isActive():
            raise  # else it shut off by itself, as the guest does after its report


def _boot(uri: str, dom: Any) -> Report:
    started = time.monotonic()
    dom.create()
    with ConsoleCapture(uri, dom.name()) as console:
        report = console.wait_done(timeout=300)
    done_at = next(t for t, line in console.timed_lines if line.endswith("IVM-REPORT done"))
    print(  # the boot wall time, and how much of it the console window leaves
        f"\n{dom.name()}: console open {console.opened_at - started:.2f} s after create(), "
        f"first output {(console.first_output_at or started) - started:.1f} s, "
        f"report done {done_at - started:.1f} s, powered off {(console.ended_at or started) - started:.1f} s"
    )
    assert not report.errors, report.errors
    return report


def test_report_survives_kernel_noise_on_the_console() -> None:
    report = parse_report(
        [
            "[    1.0] virtio_blk virtio1: [vda] 45056 512-byte logical blocks\r",
            "IVM-REPORT efi=1",
            "IVM-REPORT marker=A",
            "[    2.5] random: crng init doneIVM-REPORT disk name=vda serial=- ro=1 size=512",
            "IVM-REPORT boot-write=denied disk=vda",
            "IVM-REPORT identity-line file=hosts text=127.0.0.1  localhost = here",
            "IVM-REPORT disk-missing serial=var",
            "IVM-REPORT done\r",
        ]
    )
    assert report.done and report.efi and report.marker == "A" and report.missing == {"var"}
    assert report.disk(None).readonly and report.boot_disk == "vda"
    assert report.identity_lines == {"hosts": ("127.0.0.1  localhost = here",)}


def test_builds_are_cached_and_carry_their_marker(tmp_path: Path) -> None:
    build_standin_image(tmp_path / "warm.img", "A")  # the kernel is cached from here on
    started = time.monotonic()
    image = build_standin_image(tmp_path / "b.img", "B")
    print(f"\nsecond stand-in build: {time.monotonic() - started:.2f} s")
    entry = subprocess.run(
        ["mtype", "-i", f"{image}@@1M", "::/loader/entries/ivm.conf"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "ivm.marker=B" in entry
    assert "console=ttyS0" in entry


def test_guest_boots_twice_and_reports(system_uri: str, domain: Any) -> None:
    first = _boot(system_uri, domain)
    assert first.done and first.efi and first.marker == "A"
    boot = first.disk(None)
    assert boot.readonly and first.boot_write == "denied" and first.boot_disk == boot.name
    assert not first.disk("var").readonly and first.disk("identity").readonly
    assert (first.var_formatted, first.var_counter) == (True, 1)
    files = first.identity_files
    assert set(files) == set(IDENTITY)
    assert {name: f.mode for name, f in files.items()} == {n: m for n, (_, m) in IDENTITY.items()}
    assert files["ssh_host_ed25519_key"].uid == os.getuid()
    assert first.identity_lines["tcp_ports"] == ("22", "80")
    assert "ssh_host_ed25519_key" not in first.identity_lines

    second = _boot(system_uri, domain)
    assert (second.var_formatted, second.var_counter) == (False, 2)
    assert second.boot_write == "denied" and not second.missing
