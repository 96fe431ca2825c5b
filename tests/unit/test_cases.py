"""The host's side of the shared case tables (tests/cases): identity rules, machines.json entries and
VM names judged as each case says. The guest's side is in tests/guest/test_identity_import.py, the
Nix side in tests/nix/test_rule_cases.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ivm.errors import UsageError
from ivm.identity.rules import RULE, Name, check_file
from ivm.machines import parse_machines
from ivm.names import check_vm_name
from tests.cases import case_id, load
from tests.cases.keys import Keys, make_keys
from tests.conftest import machine_entry

IDENTITY = load("identity")
MACHINES = load("machines")
NAMES = load("names")
DEFAULTS = {"vcpus": 2, "memory_mib": 2048, "var_size_gib": 20, "mac": None, "libvirt_uri": None}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


def test_the_tables_hold_enough_cases_and_explain_every_leniency() -> None:
    assert len(IDENTITY) + len(MACHINES) + len(NAMES) >= 60
    for case in IDENTITY:
        assert case["file"] in set(Name), case
        assert {case["host"], case["guest"]} <= {"accept", "refuse"}, case
        # The guest may only be more lenient than the host, and must say why.
        if case["host"] != case["guest"]:
            assert case["host"] == "refuse" and case.get("leniency"), case
    for table in (IDENTITY, MACHINES, NAMES):
        verdicts = [c.get("host", c.get("verdict")) for c in table]
        assert "accept" in verdicts and "refuse" in verdicts


@pytest.mark.parametrize("case", IDENTITY, ids=case_id)
def test_identity_case_on_the_host(case: dict[str, Any], keys: Keys) -> None:
    data = keys.fill(case["text"]).encode()
    try:
        check_file(RULE[Name(case["file"])], data)
        verdict = "accept"
    except ValueError:
        verdict = "refuse"
    assert verdict == case["host"], case["why"]


def entry_of(meta: dict[str, Any]) -> dict[str, Any]:
    """The machines.json entry Nix writes for a meta.nix (defaults filled, as nix/machine-meta.nix)."""
    entry = machine_entry(**DEFAULTS, image_attr="image-web1")
    entry.update(meta)
    return entry


@pytest.mark.parametrize("case", MACHINES, ids=case_id)
def test_machine_case_on_the_host(case: dict[str, Any]) -> None:
    doc = json.dumps({"version": 1, "machines": {"web1": entry_of(case["meta"])}})
    try:
        machine = parse_machines(doc)["web1"]
        verdict = "accept"
    except UsageError:
        verdict = "refuse"
    assert verdict == case["host"], case["why"]
    if verdict == "accept":
        for field, value in case.get("normalised", {}).items():
            assert getattr(machine, field) == value


@pytest.mark.parametrize("case", NAMES, ids=case_id)
def test_name_case_in_the_cli_and_machines_json(case: dict[str, Any]) -> None:
    verdicts = set()
    try:
        check_vm_name(case["name"])
        verdicts.add("accept")
    except UsageError:
        verdicts.add("refuse")
    doc = json.dumps({"version": 1, "machines": {case["name"]: machine_entry()}})
    try:
        parse_machines(doc)
        verdicts.add("accept")
    except UsageError:
        verdicts.add("refuse")
    assert verdicts == {case["verdict"]}, case["why"]


def test_case_files_are_the_ones_documented() -> None:
    here = Path(__file__).resolve().parents[1] / "cases"
    assert sorted(p.name for p in here.glob("*.json")) == ["identity.json", "machines.json", "names.json"]
