"""The shared case tables: one verdict per input that every side enforcing a rule must agree on.

identity.json (the host's identity rules and the guest's import), machines.json (meta.nix as Nix
evaluates it and as the tool loads it) and names.json (VM and machine names) are plain JSON, so the
Python tests, the tests that run the guest's Bash script and the Nix evaluation tests read the same
file. A rule changed on one side and not the other fails the suite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def load(table: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((HERE / f"{table}.json").read_text())["cases"]
    return cases


def case_id(case: dict[str, Any]) -> str:
    """A short readable test id: the file or field, then the reason."""
    head = case.get("file") or case.get("name") or ",".join(case.get("meta", {})) or "defaults"
    return f"{head}: {case['why']}"
