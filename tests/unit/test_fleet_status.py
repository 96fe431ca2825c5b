"""`status` of a fleet reads every domain (with its state) and every volume in one call each, not
per VM. On libvirt's test driver, with the calls counted."""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import libvirt
import pytest

from ivm.config import Settings
from ivm.domain_xml import Metadata, metadata_element
from ivm.hypervisor.domains import Domains, State
from ivm.hypervisor.host import Hypervisor
from ivm.hypervisor.storage import Storage
from ivm.ops import status as status_ops
from ivm.storage_xml import volume_xml
from ivm.volumes import vm_volumes
from tests.conftest import Project, machine_entry

COUNTING = threading.Lock()
LIBVIRT_TYPES = (libvirt.virConnect, libvirt.virDomain, libvirt.virStoragePool, libvirt.virStorageVol)


class Counting:
    """A libvirt object whose method calls are counted (and whose results are counted too)."""

    def __init__(self, target: Any, calls: Counter[str]):
        self._target, self._calls = target, calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with COUNTING:  # `status` reads VMs from several threads
                self._calls[name] += 1
            unwrapped = [a._target if isinstance(a, Counting) else a for a in args]
            return wrap(attr(*unwrapped, **kwargs), self._calls)

        return call


def wrap(value: Any, calls: Counter[str]) -> Any:
    if isinstance(value, LIBVIRT_TYPES):
        return Counting(value, calls)
    if isinstance(value, list):
        return [wrap(v, calls) for v in value]
    if isinstance(value, tuple):
        return tuple(wrap(v, calls) for v in value)
    return value


def domain_xml_with(name: str, meta: Metadata) -> str:
    from lxml import etree

    vm = etree.tostring(metadata_element(meta), encoding="unicode")
    return (
        f"<domain type='test'><name>{name}</name><memory>65536</memory>"
        f"<os><type>hvm</type></os><metadata>{vm}</metadata></domain>"
    )


@pytest.fixture
def fleet(test_driver: Any) -> Any:
    """Five VMs, each defined with ivm's metadata and holding its three volumes."""
    pool = test_driver.storagePoolLookupByName("default-pool")
    names = [f"st{secrets.token_hex(3)}-{i}" for i in range(5)]
    made: list[Any] = []
    for i, name in enumerate(names):
        meta = Metadata(name, f"{i:032x}", None, "0.1.0")
        made.append(test_driver.defineXML(domain_xml_with(name, meta)))
        for vol in vm_volumes(name).all():
            made.append(pool.createXML(volume_xml(vol, 1024 * 1024, "raw"), 0))
    yield names
    for obj in made:
        if isinstance(obj, libvirt.virDomain):
            obj.undefine()
        else:
            obj.delete(0)


def test_status_of_a_fleet_looks_nothing_up_per_vm(
    test_driver: Any, fleet: list[str], project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.write_machines({name: machine_entry() for name in fleet})
    settings = settings_for(project)
    calls = count_calls(test_driver, monkeypatch)
    rows = status_ops.status(settings, evaluate=False)
    assert [r.name for r in rows] == sorted(fleet)
    assert [r.state for r in rows] == [State.SHUT_OFF.value] * len(fleet)
    assert sorted(r.base or "" for r in rows) == [f"{i:032x}" for i in range(len(fleet))]
    assert all(all(r.volumes.values()) for r in rows)
    per_vm = {"lookupByName", "storageVolLookupByName", "state", "storagePoolLookupByName"}  # XMLDesc: drift
    assert calls["getAllDomainStats"] == 1 and calls["listAllVolumes"] == 1
    assert not per_vm & {k for k, v in calls.items() if v >= len(fleet)}, calls
    assert calls["refresh"] == 0, "a read rescanned the pool (every file of every VM)"
    assert calls["info"] == len(fleet), calls  # the var disk's use, read fresh per VM


def test_list_reads_one_answer_per_vm(
    test_driver: Any, fleet: list[str], project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.write_machines({name: machine_entry() for name in fleet})
    calls = count_calls(test_driver, monkeypatch)
    rows = status_ops.status(settings_for(project), evaluate=False, detail=False)
    assert sorted(r.base or "" for r in rows) == [f"{i:032x}" for i in range(len(fleet))]
    assert [r.var_used_bytes for r in rows] == [None] * len(fleet)
    assert calls["XMLDesc"] == len(fleet) and calls["info"] == 0 and calls["refresh"] == 0, calls


def settings_for(project: Project) -> Settings:
    return Settings(
        machines_file=project.machines_file,
        root=project.root,
        connect="test:///default",
        pool="default-pool",
        pool_path="/default-pool",
    )


def count_calls(test_driver: Any, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Make `status` open the test driver through a wrapper that counts every libvirt call."""
    calls: Counter[str] = Counter()
    conn = Counting(test_driver, calls)

    @contextmanager
    def counted(_settings: Settings, uri: str) -> Iterator[Hypervisor]:
        yield Hypervisor(uri, Storage(conn, "default-pool", "/default-pool"), Domains(conn), conn)

    monkeypatch.setattr(status_ops, "open_hypervisor", counted)
    return calls
