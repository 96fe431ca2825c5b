"""Each VM's own QEMU uid on DAC-only hosts, and ownership drift of read-only disks (pure parts)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import cast

import libvirt
import pytest

from ivm.errors import ToolError
from ivm.hypervisor.domains import Domains
from ivm.hypervisor.handles import Connection
from ivm.hypervisor.host import Hypervisor
from ivm.hypervisor.ownership import expected, judge
from ivm.hypervisor.security import (
    UID_RANGE,
    choose_uid,
    domain_uids,
    label_for,
    needs_own_uid,
    qemu_gid,
    static_uid,
)
from ivm.hypervisor.storage import Storage
from ivm.volumes import vm_volumes


def caps(*models: str) -> str:
    secmodels = "".join(
        f"<secmodel><model>{m}</model><doi>0</doi>"
        + (
            "<baselabel type='kvm'>+64055:+107</baselabel><baselabel type='qemu'>+64055:+64055</baselabel>"
            if m == "dac"
            else ""
        )
        + "</secmodel>"
        for m in models
    )
    return f"<capabilities><host>{secmodels}</host></capabilities>"


def test_own_uid_only_where_dac_is_all_there_is() -> None:
    assert needs_own_uid("qemu:///system", caps("none", "dac"))
    assert needs_own_uid("qemu+ssh://root@hv2/system", caps("none", "dac"))
    assert not needs_own_uid("qemu:///system", caps("apparmor", "dac"))
    assert not needs_own_uid("qemu:///system", caps("selinux", "dac"))
    assert not needs_own_uid("qemu:///session", caps("none", "dac"))  # QEMU runs as the user
    assert not needs_own_uid("qemu:///system", caps("none"))  # no DAC driver: no labels at all
    assert not needs_own_uid("test:///default", caps("none", "dac"))


def test_the_group_is_the_daemons_qemu_group_for_the_domain_type() -> None:
    assert qemu_gid(caps("none", "dac"), "qemu") == 64055
    assert qemu_gid(caps("none", "dac"), "kvm") == 107
    assert qemu_gid(caps("none"), "kvm") is None


def test_static_uid_is_read_back_from_a_domain() -> None:
    label = "<label>+1879048200:+64055</label>"
    xml = f"<domain><seclabel type='static' model='dac' relabel='yes'>{label}</seclabel></domain>"
    assert static_uid(xml) == 1879048200
    assert static_uid("<domain><seclabel type='dynamic' model='apparmor'/></domain>") is None


def test_uids_are_deterministic_in_range_and_never_shared() -> None:
    first = choose_uid("web1", None, set())
    # Pinned: a per-process hash (Python's hash() of a str) would pass an in-process comparison.
    assert first == 1886753274 and first in UID_RANGE
    assert choose_uid("web1", None, {first}) != first  # another domain holds it: moved on
    assert choose_uid("web1", first, set()) == first  # a defined domain keeps its uid
    assert choose_uid("web1", 1000, set()) == first  # a uid outside the range is not kept
    names = [f"vm{i}" for i in range(2000)]
    taken: set[int] = set()
    for name in names:
        taken.add(choose_uid(name, None, taken))
    assert len(taken) == len(names)
    last = UID_RANGE[-1]
    crowded = set(UID_RANGE[:5]) | {last}
    assert choose_uid("x", last, crowded) not in crowded


def test_expected_owner_and_mode_of_read_only_disks() -> None:
    vols = vm_volumes("web1")
    want = {e.volume: e for e in expected(vols, "base-" + "a" * 32 + ".qcow2", 0, 1879048200)}
    assert want["web1-boot.qcow2"].mode == 0o644 and want["web1-boot.qcow2"].owners == {0}
    assert want["web1-identity.img"].mode == 0o600 and want["web1-identity.img"].owners == {0, 1879048200}
    assert want["base-" + "a" * 32 + ".qcow2"].owners == {0}
    assert "web1-var.qcow2" not in want  # writable: libvirt gives it back itself


def test_drift_is_judged_on_owner_mode_and_type(tmp_path: Path) -> None:
    vols = vm_volumes("web1")
    identity = next(e for e in expected(vols, None, os.getuid(), None) if e.volume == vols.identity)
    f = tmp_path / vols.identity
    f.write_bytes(b"x")
    f.chmod(0o600)
    assert judge(identity, f, f.lstat()) is None
    f.chmod(0o644)
    drift = judge(identity, f, f.lstat())
    assert drift is not None and drift.line().endswith(f"mode 0644, expected uid {os.getuid()} mode 0600")
    link = tmp_path / "link"
    link.symlink_to(f)
    assert judge(identity, link, link.lstat()) is not None and stat.S_ISLNK(link.lstat().st_mode)


class _Domain:
    """A listed domain; `gone` is the error its XML read raises (undefined since it was listed)."""

    def __init__(self, name: str, uid: int, gone: int | None = None) -> None:
        self._name, self.uid, self.gone = name, uid, gone

    def name(self) -> str:
        return self._name

    def XMLDesc(self, _flags: int) -> str:  # noqa: N802 -- libvirt's name
        if self.gone is not None:
            e = libvirt.libvirtError("no domain")
            e.err = (self.gone, 0, "no domain", 0, "", None, None, 0, 0)
            raise e
        label = f"<label>+{self.uid}:+64055</label>"
        return f"<domain><seclabel type='static' model='dac' relabel='yes'>{label}</seclabel></domain>"


class _Conn:
    def __init__(self, *doms: _Domain) -> None:
        self.doms = doms
        self.calls = {"caps": 0, "list": 0}

    def getCapabilities(self) -> str:  # noqa: N802 -- libvirt's name
        self.calls["caps"] += 1
        return caps("none", "dac")

    def listAllDomains(self, _flags: int) -> list[_Domain]:  # noqa: N802 -- libvirt's name
        self.calls["list"] += 1
        return list(self.doms)


def test_a_domain_undefined_while_listing_is_skipped_not_an_error() -> None:
    mine = choose_uid("web1", None, set())
    other = _Domain("other", mine)  # holds the uid web1 would take: web1 must pick another
    conn = cast(
        Connection, _Conn(_Domain("gone", 0, gone=libvirt.VIR_ERR_NO_DOMAIN), other)
    )  # a partial fake
    label = label_for("qemu:///system", caps("none", "dac"), "qemu", "web1", domain_uids(conn))
    assert label is not None and label.uid != mine and label.gid == 64055
    with pytest.raises(ToolError, match="listing domains"):  # any other failure still fails
        bad = cast(Connection, _Conn(_Domain("bad", 0, gone=libvirt.VIR_ERR_INTERNAL_ERROR)))
        domain_uids(bad)


def test_one_connection_lists_the_domains_once_and_never_hands_out_a_uid_twice() -> None:
    """A fleet command labels every VM through one connection: the capabilities and the domain list
    are read once, and each uid handed out counts as taken for the VMs after it."""
    other = _Domain("other", choose_uid("web2", None, set()))
    fake = _Conn(other)
    conn = cast(Connection, fake)  # a partial fake
    hv = Hypervisor("qemu:///system", cast(Storage, None), Domains(conn), conn)
    labels = {name: hv.dac_label(name, "qemu") for name in ("web1", "web2", "web3")}
    assert hv.has_dac()
    assert fake.calls == {"caps": 1, "list": 1}
    uids = [label.uid for label in labels.values() if label is not None]
    assert len(uids) == 3 and len({*uids, other.uid}) == 4
    assert hv.dac_label("web1", "qemu") == labels["web1"]  # its own uid, not a new one
    # Pure: a uid recorded for another name is taken, whatever the name's hash would pick.
    first = choose_uid("web4", None, set())
    web4 = label_for("qemu:///system", caps("none", "dac"), "qemu", "web4", {"x": first})
    assert web4 is not None and web4.uid != first
