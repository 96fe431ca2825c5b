"""tests/golden/standin-systemd/ (the stand-in's additions to the guest goldens) is what NixOS evaluates."""

from __future__ import annotations

import pytest

from tests.lab.standin_systemd.golden import FILES, GOLDEN, evaluate, render

pytestmark = pytest.mark.nix


def test_standin_golden_files_match_the_evaluation() -> None:
    expected = render(evaluate())
    stale = [name for name in FILES if (GOLDEN / name).read_text() != expected[name]]
    assert not stale, (
        f"tests/golden/standin-systemd/{{{','.join(stale)}}} differ from the evaluated guest: "
        "run python -m tests.lab.standin_systemd.golden and review the diff"
    )
