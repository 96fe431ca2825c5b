"""The test tree states its layers (docs/testing.md): tests/unit needs no daemon, no Nix and nothing
outside the package's check-phase source, and tests that change the host run only when allowed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import HOST_CHANGES_ENV, require_host_changes

UNIT = Path(__file__).parent
# Another layer's code, its markers, or the real daemon's fixture.
OTHER_LAYER = re.compile(
    r"^\s*(from|import) tests\.(lab|integration|nix|guest)\b|\bmark\.(integration|nix)\b|\bsystem_uri\b",
    re.MULTILINE,
)


def test_unit_tests_use_no_other_layer() -> None:
    found = {
        p.name: m.group(0)
        for p in sorted(UNIT.glob("*.py"))
        if p != Path(__file__) and (m := OTHER_LAYER.search(p.read_text()))
    }
    assert found == {}


@pytest.mark.parametrize(
    "line",
    [
        "from tests.lab.daemon import virt_type",
        "import tests.integration.conftest",
        "pytestmark = pytest.mark.nix",
        "@pytest.mark.integration",
        "def test_x(system_uri: str) -> None:",
    ],
)
def test_the_layer_check_sees_each_kind(line: str) -> None:
    assert OTHER_LAYER.search(line)


def test_host_changes_are_skipped_unless_exactly_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HOST_CHANGES_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"a user.*{HOST_CHANGES_ENV}=1"):
        require_host_changes("a user")
    monkeypatch.setenv(HOST_CHANGES_ENV, "yes")
    with pytest.raises(pytest.skip.Exception):
        require_host_changes("a user")
    monkeypatch.setenv(HOST_CHANGES_ENV, "1")
    require_host_changes("a user")  # allowed: returns
