"""/var snapshots around upgrades: `rollback --with-data` brings /var back to how the previous base
left it, plain `rollback` keeps /var, and snapshots are listed, chosen and pruned by name."""

from __future__ import annotations

import json

from tests.integration.conftest import Fleet, Images, vm_name


def snapshots(fleet: Fleet, name: str, *args: str) -> list[str]:
    doc = json.loads(fleet.ivm("snapshots", name, "--json", *args).stdout)
    return [s["name"] for s in doc["snapshots"]]


def test_rollback_with_data_restores_var_and_plain_rollback_keeps_it(fleet: Fleet, images: Images) -> None:
    name = fleet.add(vm_name("snap"))
    fleet.ivm("create", name, "--image", str(images.a))
    fleet.ivm("define", name)
    assert fleet.boot(name).var_counter == 1  # /var as base A leaves it: counter 1
    assert snapshots(fleet, name) == []

    fleet.ivm("upgrade", name, "--image", str(images.b))
    [on_a] = snapshots(fleet, name)
    assert fleet.boot(name).marker == "B"  # counter 2 on /var now

    r = fleet.ivm("rollback", name, "--with-data", "--snapshot", "var-000000000000-1", check=False)
    assert r.returncode == 2 and "no /var snapshot named" in r.stderr and len(r.stderr.splitlines()) == 1
    r = fleet.ivm("rollback", name, "--snapshot", on_a, check=False)
    assert r.returncode == 2 and "--with-data" in r.stderr
    assert snapshots(fleet, name) == [on_a]  # the refused commands changed nothing

    r = fleet.ivm("rollback", name, "--with-data")
    assert f"/var restored from {on_a}" in r.stdout, r.stdout
    report = fleet.boot(name)
    assert (report.marker, report.var_counter) == ("A", 2), report  # 1 restored, +1 this boot
    saved = [s for s in snapshots(fleet, name) if s != on_a]
    assert len(saved) == 1  # the /var it replaced (counter 2) is kept

    fleet.ivm("rollback", name)  # plain: forward to B, /var as it is
    report = fleet.boot(name)
    assert (report.marker, report.var_counter) == ("B", 3), report

    r = fleet.ivm("snapshots", name, "--keep", "1")
    assert f"deleted {on_a}" in r.stdout
    assert snapshots(fleet, name) == saved
    assert f"{name}-var.qcow2" in fleet.volumes()
