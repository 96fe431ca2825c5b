"""`plan` as a pure function: one VM of each kind of drift gets exactly its actions; what libvirt
adds to a definition is no drift; exit codes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from lxml import etree

from ivm.domain_xml import Metadata, domain_element, domain_xml
from ivm.errors import UsageError
from ivm.machines import Network, NetworkType
from ivm.ops.define import differences
from ivm.ops.plan import Action, Desired, FleetPlan, Observed, Orphan, PlanExit, VmPlan, plan_fleet, plan_vm
from ivm.ops.session import check_network_reachable
from ivm.volumes import vm_volumes
from tests.unit.test_domain_xml import machine, one, spec

OLD, NEW = "a" * 32, "b" * 32
DIGEST = "d" * 32


def as_libvirt_has_it(xml: str) -> str:
    """The definition as libvirt returns it: machine type expanded, devices and defaults added."""
    root = etree.fromstring(xml.encode())
    one(root, "os/type").set("machine", "pc-q35-9.2")
    one(root, "vcpu").set("placement", "static")
    root.append(etree.fromstring("<on_poweroff>destroy</on_poweroff>"))
    root.append(etree.fromstring("<seclabel type='dynamic' model='dac' relabel='yes'/>"))
    devices = one(root, "devices")
    devices.insert(0, etree.fromstring("<emulator>/usr/bin/qemu-system-x86_64</emulator>"))
    for extra in (
        "<controller type='usb' index='0' model='qemu-xhci'/>",
        "<input type='mouse' bus='ps2'/>",
        "<input type='keyboard' bus='ps2'/>",
        "<audio id='1' type='none'/>",
    ):
        devices.append(etree.fromstring(extra))
    for disk in devices.iterfind("disk"):
        disk.append(etree.fromstring("<address type='pci' domain='0x0000' bus='0x04' slot='0x00'/>"))
        disk.append(etree.fromstring("<alias name='virtio-disk0'/>"))
    one(devices, "serial/target").set("type", "isa-serial")
    return etree.tostring(root, encoding="unicode")


def xml(base: str = OLD, **kw: Any) -> str:
    return domain_xml(spec(metadata=Metadata("web1", base, None, "0.1.0"), **kw))


def settled(**kw: Any) -> tuple[Desired, Observed]:
    """A created, defined, running VM with nothing to do."""
    vols = vm_volumes("web1")
    desired = Desired("web1", "qemu:///system", OLD, DIGEST, xml())
    observed = Observed(
        name="web1",
        volumes=frozenset(vols.all()),
        boot_base=OLD,
        identity_digest=DIGEST,
        domain_xml=as_libvirt_has_it(xml()),
        running=True,
        restart_pending=False,
        pool_bases=frozenset({OLD}),
    )
    return desired, replace(observed, **kw)


def test_what_libvirt_adds_is_no_drift() -> None:
    assert differences(domain_element(spec()), etree.fromstring(as_libvirt_has_it(xml()).encode())) == ()
    assert plan_vm(*settled()) == VmPlan("web1", "qemu:///system")


def test_a_newer_tool_version_alone_is_no_drift() -> None:
    newer = domain_xml(spec(metadata=Metadata("web1", OLD, None, "9.9.9")))
    assert differences(domain_element(spec()), etree.fromstring(newer.encode())) == ()


def test_a_removed_nic_is_drift_though_everything_wanted_is_there() -> None:
    # covers() alone misses this: the NIC libvirt still has is no longer wanted.
    no_nic = spec(machine=machine(network=Network(NetworkType.NONE)))
    found = differences(domain_element(no_nic), etree.fromstring(as_libvirt_has_it(xml()).encode()))
    assert found == ("interface default not wanted",)


def test_each_kind_of_drift_gets_exactly_its_actions() -> None:
    d, o = settled()
    vols = vm_volumes("web1")
    cases: list[tuple[Desired, Observed, tuple[Action, ...], bool]] = [
        # never created: everything, like `up`
        (
            replace(d, base=NEW, identity_digest=None, domain_xml=None),
            replace(
                o, volumes=frozenset(), boot_base=None, identity_digest=None, domain_xml=None, running=False
            ),
            (Action.CREATE, Action.IMPORT_BASE, Action.DEFINE, Action.START),
            False,
        ),
        # created, not defined, base already in the pool
        (d, replace(o, domain_xml=None, running=False), (Action.DEFINE, Action.START), False),
        # behind its build, new base not imported yet
        (replace(d, base=NEW, domain_xml=xml(NEW)), o, (Action.IMPORT_BASE, Action.UPGRADE), True),
        # identity files changed
        (replace(d, identity_digest="e" * 32), o, (Action.IDENTITY,), True),
        # definition changed (more memory), shut off: no restart
        (
            replace(d, domain_xml=xml(machine=machine(memory_mib=4096))),
            replace(o, running=False),
            (Action.REDEFINE,),
            False,
        ),
        # an interrupted upgrade left it off and owes it a start
        (d, replace(o, running=False, restart_pending=True), (Action.START,), False),
        # killed after writing its new definition, before the restart: still running the old one
        (d, replace(o, restart_pending=True), (Action.REDEFINE,), True),
        # ... and behind its build as well: the upgrade restarts it anyway
        (
            replace(d, base=NEW, domain_xml=xml(NEW)),
            replace(o, restart_pending=True),
            (Action.IMPORT_BASE, Action.UPGRADE),
            True,
        ),
        # the identity disk is gone: create makes it
        (d, replace(o, volumes=frozenset({vols.boot, vols.var})), (Action.CREATE,), False),
    ]
    for desired, observed, actions, restart in cases:
        p = plan_vm(desired, observed)
        assert (p.actions, p.restart) == (actions, restart), p.line()


def test_unknown_current_build_keeps_the_base_it_runs() -> None:
    d, o = settled()
    assert plan_vm(replace(d, base=None), o).actions == ()


def test_exit_codes_and_json() -> None:
    d, o = settled()
    quiet = plan_fleet([(d, o)], [Orphan("old", "qemu:///system", "old", True)])
    assert quiet.exit_code() is PlanExit.NO_CHANGES and quiet.as_json()["orphans"][0]["name"] == "old"
    busy = plan_fleet([(replace(d, identity_digest="e" * 32), o)], [])
    assert busy.exit_code() is PlanExit.CHANGES and busy.exit_code() == 3
    assert busy.as_json()["vms"][0]["actions"] == ["identity"]
    broken = FleetPlan((VmPlan("web2", "qemu:///system", error="cannot connect"),))
    assert broken.exit_code() is PlanExit.FAILED
    assert broken.summary() == "0 to change, 0 unchanged, 1 failed to plan, 0 orphaned"


@pytest.mark.parametrize("code", list(PlanExit))
def test_plan_exit_codes_never_mean_invalid_input(code: PlanExit) -> None:
    assert code != 2


def test_created_not_defined_and_behind_is_defined_then_upgraded() -> None:
    d, o = settled()
    p = plan_vm(replace(d, base=NEW, domain_xml=xml(NEW)), replace(o, domain_xml=None, running=False))
    assert p.actions == (Action.IMPORT_BASE, Action.DEFINE, Action.UPGRADE, Action.START)
    assert not p.restart


def test_a_user_mode_nic_is_refused_on_a_remote_hypervisor_only() -> None:
    user = machine(network=Network(NetworkType.USER))
    check_network_reachable("web1", user, "qemu:///system")
    check_network_reachable("web1", user, "qemu:///session")
    with pytest.raises(
        UsageError, match=r"web1 has a user-mode NIC .* qemu\+ssh://h2/system is another host"
    ):
        check_network_reachable("web1", user, "qemu+ssh://h2/system")
    check_network_reachable(
        "web1", machine(network=Network(NetworkType.BRIDGE, "br0")), "qemu+ssh://h2/system"
    )
