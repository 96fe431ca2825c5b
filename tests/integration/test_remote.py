"""Remote hypervisors: the whole lifecycle against a second libvirt "host" reached by its own URI,
named once by `--connect` and once by `libvirt_uri` in machines.json. LIBVIRT_URI stays on the
system daemon throughout, so anything that ignored the remote URI would land there instead."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from tests.integration.conftest import Fleet, Images, teardown_fleet, vm_name
from tests.lab.second_host import SecondHost, SecondHostError, second_host

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def host2(system_uri: str) -> Iterator[SecondHost]:
    try:
        with second_host() as host:
            yield host
    except SecondHostError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a second libvirt host: {e}")
        pytest.skip(f"no second libvirt host: {e}")


@dataclass
class RemoteFleet(Fleet):
    """A fleet whose pool and VMs live on the second host (`uri`), while LIBVIRT_URI names the
    system daemon; `connect` set means every CLI call names the host with --connect."""

    system_uri: str = ""
    connect: str | None = None

    def env(self) -> dict[str, str]:
        return {**super().env(), "LIBVIRT_URI": self.system_uri}

    def ivm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        given = ("--connect", self.connect) if self.connect else ()
        return super().ivm(*given, *args, check=check, timeout=timeout)


@pytest.fixture(params=["connect-option", "machines-json"])
def remote_fleet(
    request: pytest.FixtureRequest, host2: SecondHost, system_uri: str, tmp_path: Path
) -> Iterator[RemoteFleet]:
    root = tmp_path / "project"
    (root / "machines").mkdir(parents=True)
    (root / "flake.nix").write_text("{ outputs = _: { }; }\n")
    machines = tmp_path / "machines.json"
    machines.write_text(json.dumps({"version": 1, "machines": {}}))
    pool = f"ivm-test-{secrets.token_hex(4)}"
    fleet = RemoteFleet(
        host2.uri,
        root,
        machines,
        pool,
        host2.pool_base / pool,
        system_uri=system_uri,
        connect=host2.uri if request.param == "connect-option" else None,
    )
    try:
        yield fleet
    finally:
        teardown_fleet(fleet)


def _system_has(system_uri: str, pool: str, volume_path: Path, domain: str) -> list[str]:
    """What of ours the system daemon knows about (it should know nothing)."""
    found: list[str] = []
    conn = libvirt.open(system_uri)
    lookups: tuple[tuple[str, Callable[[], object]], ...]
    try:
        lookups = (
            (f"pool {pool}", lambda: conn.storagePoolLookupByName(pool)),
            (f"volume {volume_path}", lambda: conn.storageVolLookupByPath(str(volume_path))),
            (f"domain {domain}", lambda: conn.lookupByName(domain)),
        )
        for what, lookup in lookups:
            try:
                lookup()
                found.append(what)
            except libvirt.libvirtError:
                pass
    finally:
        conn.close()
    return found


def test_lifecycle_on_a_second_host(remote_fleet: RemoteFleet, host2: SecondHost, images: Images) -> None:
    fleet = remote_fleet
    by_json = fleet.connect is None
    name = fleet.add(vm_name("rm"), libvirt_uri=host2.uri if by_json else None)

    fleet.ivm("create", name, "--image", str(images.a))
    fleet.ivm("define", name)
    report = fleet.boot(name)  # `ivm start`, then the console read through the second host's URI
    assert report.done and report.efi and not report.errors, report
    assert (report.marker, report.var_counter, report.boot_write) == ("A", 1, "denied")

    bases = [v for v in fleet.volumes() if v.startswith("base-")]
    assert len(bases) == 1 and fleet.volume_path(bases[0]).is_file()
    assert _system_has(fleet.system_uri, fleet.pool, fleet.volume_path(bases[0]), name) == []

    r = fleet.ivm("upgrade", name, "--image", str(images.b))
    assert "1 upgraded, 0 up to date, 0 failed" in r.stdout, r.stdout
    report = fleet.boot(name)
    assert (report.marker, report.var_counter, report.var_formatted) == ("B", 2, False)

    status = json.loads(fleet.ivm("status", name, "--json", "--no-eval").stdout)
    assert [(s["name"], s["uri"], s["state"]) for s in status] == [(name, host2.uri, "shut off")]
    assert status[0]["base"] != status[0]["previous_base"]
    bases = [v for v in fleet.volumes() if v.startswith("base-")]
    assert len(bases) == 2
    assert _system_has(fleet.system_uri, fleet.pool, fleet.volume_path(bases[1]), name) == []

    # gc on that URI: both bases are in use (current and rollback) until the VM goes.
    assert f"{host2.uri}: 2 base(s) in use, 0 would delete" in fleet.ivm("gc", "--dry-run").stdout
    fleet.ivm("destroy", name, "--delete-data")
    r = fleet.ivm("gc")
    assert sorted(line.split()[-1] for line in r.stdout.splitlines() if " deleted base-" in line) == bases
    assert f"{host2.uri}: 0 base(s) in use, 2 deleted" in r.stdout
    assert fleet.volumes() == []
