"""No private key material in what a full `create` + `define` on the real daemon leaves behind: the
--debug log, domain and volume XML, machines.json; pool volumes and the key file are private (0600).

The checks without a daemon, and the leak detectors used here, are in tests/unit/test_secrets.py.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import libvirt
import pytest

from tests.conftest import Project, machine_entry
from tests.lab.pool import scratch_pool_dir
from tests.unit.test_secrets import key_secrets, leaks


def _remove_pool_and_domain(uri: str, pool_name: str, vm: str) -> None:
    conn = libvirt.open(uri)
    try:
        try:
            dom = conn.lookupByName(vm)
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError:
            pass
        try:
            pool = conn.storagePoolLookupByName(pool_name)
        except libvirt.libvirtError:
            return
        if pool.isActive():
            pool.refresh(0)
            for vol in pool.listAllVolumes(0):
                vol.delete(0)
            pool.destroy()
        pool.undefine()
    finally:
        conn.close()


@pytest.mark.integration
def test_full_create_and_define_leak_nothing(project: Project, tmp_path: Path, system_uri: str) -> None:
    vm = f"sec-{uuid.uuid4().hex[:8]}"
    project.write_machines({vm: machine_entry(network={"type": "none"}, var_size_gib=1)})
    image = tmp_path / "base.raw"
    with image.open("wb") as f:
        f.truncate(16 * 1024 * 1024)
    subprocess.run(["/usr/sbin/sfdisk", "-q", str(image)], input=b"label: gpt\n,,U\n", check=True)
    pool_name = f"ivm-test-{vm}"
    with scratch_pool_dir() as pool_dir:
        env = {**os.environ, "IVM_POOL": pool_name, "IVM_POOL_PATH": str(pool_dir)}
        base = [
            sys.executable,
            "-m",
            "ivm",
            "--debug",
            "--machines",
            str(project.machines_file),
            "--root",
            str(project.root),
            "--connect",
            system_uri,
            "--virt-type",
            "qemu",
        ]
        try:
            logs = ""
            for args in (["create", vm, "--image", str(image)], ["define", vm], ["xml", vm]):
                done = subprocess.run([*base, *args], capture_output=True, text=True, env=env, check=False)
                assert done.returncode == 0, done.stderr
                logs += done.stdout + done.stderr
            key = project.machine_dir(vm) / "ssh_host_ed25519_key"
            secrets = key_secrets(key)
            assert "+ mkfs.ext4" in logs, "the debug log should show what ran"
            conn = libvirt.open(system_uri)
            try:
                dom = conn.lookupByName(vm)
                xmls = [dom.XMLDesc(0), dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)]
                pool = conn.storagePoolLookupByName(pool_name)
                xmls += [v.XMLDesc(0) for v in pool.listAllVolumes(0)] + [pool.XMLDesc(0)]
            finally:
                conn.close()
            found = {
                "debug log": leaks(logs, secrets),
                "domain and volume XML": leaks("\n".join(xmls), secrets),
                "machines.json": leaks(project.machines_file.read_text(), secrets),
            }
            assert found == {"debug log": [], "domain and volume XML": [], "machines.json": []}
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in pool_dir.iterdir()}
            assert modes[f"{vm}-identity.img"] == 0o600
            assert modes[f"{vm}-var.qcow2"] == 0o600
            assert stat.S_IMODE(key.stat().st_mode) == 0o600
            # The identity volume's bytes do hold the key (that is its job): only its mode protects it.
            assert key.read_bytes().strip() in (pool_dir / f"{vm}-identity.img").read_bytes()
        finally:
            _remove_pool_and_domain(system_uri, pool_name, vm)
