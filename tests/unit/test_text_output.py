"""Text output says what JSON says: drift and previous base in status, why gc keeps a base, sizes
that never round a little down to nothing."""

from __future__ import annotations

import pytest

from ivm.cli import output
from ivm.ops.gc import GcResult
from ivm.ops.status import VmState, VmStatus


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1025, "1.1 KiB"), (3 * 1024**2 // 2, "1.5 MiB"),
     (1024**3 + 1, "1.1 GiB"), (20 * 1024**3, "20.0 GiB")],
)  # fmt: skip
def test_sizes_round_up(n: int, text: str) -> None:
    assert output._size(n) == text


def _row(**kw: object) -> VmStatus:
    values: dict[str, object] = {
        "name": "web1",
        "uri": "qemu:///system",
        "state": VmState.RUNNING,
        "base": "a" * 32,
        "previous_base": "b" * 32,
        "volumes": {"web1-var.qcow2": True},
        "var_used_bytes": 300 * 1024,
        "var_size_bytes": 20 * 1024**3,
        "current_base": "c" * 32,
        "behind": True,
    }
    values.update(kw)
    return VmStatus(**values)  # type: ignore[arg-type]


def test_status_text_shows_drift_and_previous_base(capsys: pytest.CaptureFixture[str]) -> None:
    output.print_status([_row()], as_json=False, detail=True)
    out = capsys.readouterr().out
    assert "behind: yes, current build is base cccccccccccc (ivm upgrade web1)" in out
    assert "previous base bbbbbbbbbbbb" in out and "var 300.0 KiB/20.0 GiB" in out
    output.print_status([_row(behind=False, previous_base=None)], as_json=False, detail=True)
    out = capsys.readouterr().out
    assert "behind: no; previous base -" in out
    output.print_status([_row(behind=None)], as_json=False, detail=True)
    assert "behind: unknown" in capsys.readouterr().out


def test_status_text_says_why_a_vm_is_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    row = _row(state=VmState.UNKNOWN, reachable=False, error="cannot connect to libvirt at x", base=None)
    output.print_status([row], as_json=False, detail=False)
    assert capsys.readouterr().out == "web1  unreachable: cannot connect to libvirt at x  base -\n"


def test_gc_result_says_why_each_base_is_kept() -> None:
    r = GcResult("qemu:///system", (), ("base-a.qcow2",), (), (("base-a.qcow2", "web1 runs it"),
                 ("base-a.qcow2", "web2's previous base, for rollback")))  # fmt: skip
    assert r.reason("base-a.qcow2") == "web1 runs it; web2's previous base, for rollback"
