"""machines.json as Nix evaluates it holds no secret: nothing of the working tree's private keys."""

from __future__ import annotations

import json

import pytest

from ivm.machines import parse_machines
from tests.nix.nixeval import nix_eval
from tests.unit.test_secrets import key_secrets, leaks, tracked_files, working_tree_keys

pytestmark = pytest.mark.nix


def test_nix_evaluated_machines_json_holds_no_secret() -> None:
    tracked_files()
    text = json.dumps({"version": 1, "machines": nix_eval("lib.machines")})
    secrets = [s for key in working_tree_keys() for s in key_secrets(key)]
    assert leaks(text, secrets) == []
    for name, machine in parse_machines(text).items():
        assert machine.name == name
    for key in working_tree_keys():
        assert key.read_text().strip() not in text
