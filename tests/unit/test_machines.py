"""machines.json: the schema of design.md §5, every violation named by its JSON path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ivm.errors import Exit, UsageError
from ivm.machines import NetworkType, defaults, get_machine, load_machines, parse_machines
from tests.conftest import machine_entry


def doc(**machines: dict[str, Any]) -> str:
    return json.dumps({"version": 1, "machines": machines})


def test_design_example_loads() -> None:
    machines = parse_machines(doc(web1=machine_entry()))
    web1 = machines["web1"]
    assert (web1.system, web1.arch, web1.vcpus, web1.memory_mib, web1.var_size_gib) == (
        "x86_64-linux",
        "x86_64",
        2,
        2048,
        20,
    )
    assert web1.network.type is NetworkType.NETWORK and web1.network.name == "default"
    assert web1.mac is None and web1.libvirt_uri is None and web1.image_attr == "image-web1"


@pytest.mark.parametrize(
    "network",
    [{"type": "bridge", "name": "br0"}, {"type": "none"}, {"type": "network", "name": "lan-2"}],
)
def test_network_kinds(network: dict[str, str]) -> None:
    assert parse_machines(doc(a=machine_entry(network=network)))["a"].network.type == network["type"]


def test_mac_is_normalised_and_uri_kept() -> None:
    m = parse_machines(doc(a=machine_entry(mac="52:54:00:AA:bb:01", libvirt_uri="qemu+ssh://h/system")))["a"]
    assert m.mac == "52:54:00:aa:bb:01" and m.libvirt_uri == "qemu+ssh://h/system"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("{", "not valid JSON"),
        ("[]", "must be a JSON object"),
        (json.dumps({"version": 2, "machines": {}}), "unsupported version 2"),
        (json.dumps({"version": True, "machines": {}}), "unsupported version"),
        (json.dumps({"version": 1}), "machines must be an object"),
        (json.dumps({"version": 1, "machines": {}, "x": 1}), ": x is not a known field"),
        (doc(Web=machine_entry()), "machines.Web is not a valid VM name"),
        (doc(a=machine_entry(vcpus=0)), "machines.a.vcpus must be between 1 and"),
        (doc(a=machine_entry(vcpus="2")), "machines.a.vcpus must be an integer"),
        (doc(a=machine_entry(vcpus=True)), "machines.a.vcpus must be an integer"),
        (doc(a=machine_entry(memory_mib=-5)), "machines.a.memory_mib must be between"),
        (doc(a=machine_entry(var_size_gib=10**9)), "machines.a.var_size_gib must be between"),
        (doc(a=machine_entry(system="riscv64-linux")), "machines.a.system must be one of"),
        (doc(a=machine_entry(network={"type": "vde"})), "machines.a.network.type must be"),
        (doc(a=machine_entry(network={"type": "bridge"})), "machines.a.network.name must name"),
        (doc(a=machine_entry(network={"type": "none", "name": "x"})), "machines.a.network.name is not"),
        (doc(a=machine_entry(mac="52:54:00:zz:00:00")), "machines.a.mac must be null or a MAC"),
        (doc(a=machine_entry(mac="01:00:5e:00:00:01")), "multicast"),
        (doc(a=machine_entry(libvirt_uri="not a uri")), "machines.a.libvirt_uri must be null"),
        (doc(a=machine_entry(image_attr="")), "machines.a.image_attr must be"),
        (doc(a={k: v for k, v in machine_entry().items() if k != "system"}), "machines.a.system is missing"),
        (doc(a={**machine_entry(), "ram": 1}), "machines.a.ram is not a known field"),
    ],
)
def test_violations_name_their_path(text: str, where: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_machines(text, source="m.json")
    assert where in e.value.message and e.value.exit_code == Exit.USAGE and e.value.hint


def test_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist") as e:
        load_machines(tmp_path / "nope.json")
    assert "machines-json" in (e.value.hint or "")


def test_unknown_machine_lists_known_ones() -> None:
    machines = parse_machines(doc(web1=machine_entry(), web2=machine_entry()))
    with pytest.raises(UsageError, match=r"unknown machine 'db' \(known: web1, web2\)"):
        get_machine(machines, "db")


def test_the_shipped_example_loads_with_its_defaults() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs"
    machines = load_machines(docs / "machines.example.json")
    web1 = machines["web1"]
    assert (web1.vcpus, web1.memory_mib, web1.var_size_gib, web1.mac, web1.libvirt_uri) == (
        2,
        2048,
        20,
        None,
        None,
    )
    assert (web1.network.type, web1.network.name, web1.image_attr) == ("network", "default", "image-web1")
    assert machines["db1"].network.name == "br0" and machines["batch"].network.type == "none"
    if not (docs / "operations.md").exists():
        return  # the Nix check phase's source holds the example but not the documentation
    table = (docs / "operations.md").read_text()
    for field, value in defaults("<name>").items():  # the documented defaults are the ones applied
        assert f"| `{field}` |" in table and f"`{json.dumps(value)}`" in table, field
