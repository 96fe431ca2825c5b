"""Fleet-wide reads of the domain list survive another client undefining a domain meanwhile; any
other failure still fails."""

from __future__ import annotations

from typing import cast

import libvirt
import pytest

from ivm.errors import ToolError
from ivm.hypervisor.domains import Domains, xml_unless_gone
from ivm.hypervisor.handles import Connection, DomainHandle


def _error(code: int) -> libvirt.libvirtError:
    e = libvirt.libvirtError("failed")
    e.err = (code, 0, "failed", 0, "", None, None, 0, 0)
    return e


class _Dom:
    def __init__(self, name: str, fails: int | None = None) -> None:
        self._name, self.fails = name, fails

    def name(self) -> str:
        return self._name

    def XMLDesc(self, _flags: int = 0) -> str:  # noqa: N802 -- libvirt's name
        if self.fails is not None:
            raise _error(self.fails)
        return f"<domain><name>{self._name}</name></domain>"


class _Conn:
    """getAllDomainStats fails with each of `failures` in turn, then answers."""

    def __init__(self, *failures: int) -> None:
        self.failures = list(failures)
        self.calls = 0

    def getAllDomainStats(self, _stats: int, _flags: int) -> list[tuple[_Dom, dict[str, int]]]:  # noqa: N802
        self.calls += 1
        if self.failures:
            raise _error(self.failures.pop(0))
        return [(_Dom("web1"), {"state.state": libvirt.VIR_DOMAIN_RUNNING})]


def test_listing_is_tried_again_when_a_domain_vanished_meanwhile() -> None:
    conn = _Conn(libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_DOMAIN)
    domains = Domains(cast(Connection, conn))  # a partial fake
    domains.list_all()
    assert conn.calls == 3
    assert domains.lookup("web1") is not None and domains.lookup("web2") is None


def test_listing_gives_up_after_three_vanishings_and_on_any_other_error() -> None:
    for conn, calls in (
        (_Conn(*[libvirt.VIR_ERR_NO_DOMAIN] * 3), 3),
        (_Conn(libvirt.VIR_ERR_INTERNAL_ERROR), 1),
    ):
        with pytest.raises(ToolError, match="listing domains"):
            Domains(cast(Connection, conn)).list_all()
        assert conn.calls == calls


def test_xml_of_a_vanished_domain_is_none_and_other_errors_raise() -> None:
    assert xml_unless_gone(cast(DomainHandle, _Dom("web1"))) == "<domain><name>web1</name></domain>"
    assert xml_unless_gone(cast(DomainHandle, _Dom("gone", libvirt.VIR_ERR_NO_DOMAIN))) is None
    with pytest.raises(libvirt.libvirtError):
        xml_unless_gone(cast(DomainHandle, _Dom("bad", libvirt.VIR_ERR_INTERNAL_ERROR)))
