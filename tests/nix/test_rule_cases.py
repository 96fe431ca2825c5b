"""The Nix side of the shared case tables (tests/cases): every machines.json and names.json case
judged by nix/machine-meta.nix and nix/machines.nix exactly as python/ivm/machines.py and names.py
judge it (tests/unit/test_cases.py), in one evaluation of the flake's lib.machineEntry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from tests.cases import case_id, load
from tests.nix.nixeval import nix_eval

pytestmark = pytest.mark.nix

MACHINES = load("machines")
NAMES = load("names")

JUDGE = """
l: let
  cases = builtins.fromJSON %s;
  judge = f: let r = builtins.tryEval (builtins.deepSeq (f null) (f null)); in
    if r.success then r.value else null;
in {
  machines = map (c: judge (_: l.machineEntry "web1" "case" ({ system = "x86_64-linux"; } // c.meta)))
    cases.machines;
  names = map (n: judge (_: l.machineName n)) cases.names;
}
"""


def nix_string(text: str) -> str:
    """A Nix string literal holding text (JSON string escapes are Nix's, save `${`)."""
    return json.dumps(text).replace("${", "\\${")


@pytest.fixture(scope="module")
def judged() -> Mapping[str, Any]:
    cases = {"machines": [c["meta"] for c in MACHINES], "names": [c["name"] for c in NAMES]}
    cases_json = json.dumps({"machines": [{"meta": m} for m in cases["machines"]], "names": cases["names"]})
    result: Mapping[str, Any] = nix_eval("lib", apply=JUDGE % nix_string(cases_json))
    return result


@pytest.mark.parametrize("index", range(len(MACHINES)), ids=[case_id(c) for c in MACHINES])
def test_machine_case_in_nix(judged: Mapping[str, Any], index: int) -> None:
    case = MACHINES[index]
    entry = judged["machines"][index]
    assert ("refuse" if entry is None else "accept") == case["nix"], case["why"]
    for field, value in case.get("normalised", {}).items():
        assert entry[field] == value


@pytest.mark.parametrize("index", range(len(NAMES)), ids=[case_id(c) for c in NAMES])
def test_name_case_in_nix(judged: Mapping[str, Any], index: int) -> None:
    case = NAMES[index]
    assert ("refuse" if judged["names"][index] is None else "accept") == case["verdict"], case["why"]
