"""The libvirt domain of a VM, as a pure function of its machine, identity and disks.

No policy lives here (nova's virt/libvirt/config.py): callers decide virt type, firmware and base.
The result never names a /nix/store path: disks are pool volumes, firmware is libvirt's choice
unless explicit OVMF paths on the hypervisor are given.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from lxml import etree
from lxml.builder import E, ElementMaker

from ivm.machines import Machine, NetworkType
from ivm.volumes import VmVolumes

NAMESPACE = "urn:x-ivm:domain:1"
M = ElementMaker(namespace=NAMESPACE, nsmap={"ivm": NAMESPACE})
QEMU_NAMESPACE = "http://libvirt.org/schemas/domain/qemu/1.0"
Q = ElementMaker(namespace=QEMU_NAMESPACE, nsmap={"qemu": QEMU_NAMESPACE})
USER_NETDEV = "ivmnet0"
# A root-bus slot libvirt leaves alone (it fills slots from 0x1 up): QEMU's arguments come first.
USER_NIC_ADDRESS = "bus=pcie.0,addr=0x18"
MACHINE_TYPES = {"x86_64": "q35", "aarch64": "virt"}
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"


@dataclass(frozen=True)
class Firmware:
    """Explicit UEFI firmware paths on the hypervisor; both None means libvirt's autoselection."""

    code: str | None = None
    vars_template: str | None = None


@dataclass(frozen=True)
class Metadata:
    """What ivm records in the domain: which machine, which base it runs, which it ran before."""

    machine: str
    base: str
    previous_base: str | None
    tool_version: str


@dataclass(frozen=True)
class DacLabel:
    """The uid:gid QEMU runs as for this one domain (libvirt's static DAC label)."""

    uid: int
    gid: int

    @property
    def text(self) -> str:
        return f"+{self.uid}:+{self.gid}"


@dataclass(frozen=True)
class DomainSpec:
    name: str
    machine: Machine
    machine_id: str | None  # None: not generated yet (a preview); no UUID or MAC then
    pool: str
    volumes: VmVolumes
    metadata: Metadata
    virt_type: str = "kvm"
    firmware: Firmware = Firmware()
    uuid: str | None = None  # None: derived from the machine-id
    dac: DacLabel | None = None  # None: the daemon's QEMU user (a MAC driver isolates VMs, or session)
    boot_seclabel: bool = True  # keep the boot chain's owner (relabel='no'); False where no DAC driver


def domain_uuid(machine_id: str) -> str:
    """A stable UUID derived from (not equal to) the machine-id, which machine-id(5) asks to keep
    confidential; version-4 and variant bits set so libvirt and SMBIOS accept it."""
    raw = bytearray(hashlib.sha256(f"ivm-domain-uuid:{machine_id}".encode()).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def domain_mac(machine_id: str) -> str:
    """A stable MAC in QEMU's locally administered 52:54:00 range, derived from the machine-id."""
    tail = hashlib.sha256(f"ivm-mac:{machine_id}".encode()).digest()[:3]
    return "52:54:00:" + ":".join(f"{b:02x}" for b in tail)


def domain_title(spec: DomainSpec) -> str:
    """What `virsh list --title` and virt-manager show: one line (libvirt refuses a newline)."""
    return f"{spec.name}: ivm VM, image {spec.machine.image_attr}"


def domain_description(spec: DomainSpec) -> str:
    """Where the VM comes from and where to change it; only settings that redefine the domain anyway
    (never the base, which an upgrade changes), so the text alone never causes a redefine."""
    m = spec.machine
    return (
        f"Made by ivm from machines/{spec.name}/ (image {m.image_attr}, {m.vcpus} vCPU, "
        f"{m.memory_mib} MiB). Change it there and run `ivm define {spec.name}`; edits here are replaced."
    )


def _uuid(spec: DomainSpec) -> list[etree._Element]:
    if spec.uuid:
        return [E.uuid(spec.uuid)]
    return [E.uuid(domain_uuid(spec.machine_id))] if spec.machine_id else []


def _mac(spec: DomainSpec) -> list[etree._Element]:
    if spec.machine.mac:
        return [E.mac(address=spec.machine.mac)]
    return [E.mac(address=domain_mac(spec.machine_id))] if spec.machine_id else []


def domain_element(spec: DomainSpec) -> etree._Element:
    m = spec.machine
    memory_kib = str(m.memory_mib * 1024)
    return E.domain(
        E.name(spec.name),
        *_uuid(spec),
        E.title(domain_title(spec)),
        E.description(domain_description(spec)),
        E.metadata(metadata_element(spec.metadata)),
        E.memory(memory_kib, unit="KiB"),
        E.currentMemory(memory_kib, unit="KiB"),
        E.vcpu(str(m.vcpus)),
        _os(spec),
        E.features(*([E.acpi(), E.apic()] if m.arch == "x86_64" else [E.acpi()])),
        *_cpu(spec),
        E.clock(offset="utc"),
        E.devices(*_devices(spec)),
        *_seclabel(spec),
        *_user_network(spec),
        type=spec.virt_type,
    )


def domain_xml(spec: DomainSpec) -> str:
    return etree.tostring(domain_element(spec), pretty_print=True, encoding="unicode")


def metadata_element(meta: Metadata) -> etree._Element:
    children = [M.machine(meta.machine), M.base(meta.base)]
    if meta.previous_base:
        children.append(M("previous-base", meta.previous_base))
    children.append(M("tool-version", meta.tool_version))
    return M.vm(*children)


def read_metadata(xml: str | etree._Element) -> Metadata | None:
    """ivm's metadata from a domain's XML (text, or already parsed); None for domains ivm did not
    define."""
    doc = etree.fromstring(xml.encode()) if isinstance(xml, str) else xml
    vm = doc.find(f"metadata/{{{NAMESPACE}}}vm")
    return None if vm is None else _metadata_of(vm, f"{{{NAMESPACE}}}")


def _metadata_of(vm: etree._Element, ns: str) -> Metadata | None:
    def text(tag: str) -> str | None:
        found = vm.find(f"{ns}{tag}")
        return found.text.strip() if found is not None and found.text else None

    machine, base = text("machine"), text("base")
    if not machine or not base:
        return None
    return Metadata(machine, base, text("previous-base"), text("tool-version") or "unknown")


def _os(spec: DomainSpec) -> etree._Element:
    arch = spec.machine.arch
    os_type = E.type("hvm", arch=arch, machine=MACHINE_TYPES[arch])
    fw = spec.firmware
    if fw.code:
        loader = E.loader(fw.code, readonly="yes", type="pflash")
        nvram = E.nvram(template=fw.vars_template) if fw.vars_template else E.nvram()
        return E.os(os_type, loader, nvram)
    # Autoselect UEFI, but never a Secure Boot build: those enrol Microsoft's keys, which an
    # unsigned systemd-boot fails against ("Access Denied").
    return E.os(
        os_type,
        E.firmware(E.feature(enabled="no", name="secure-boot")),
        firmware="efi",
    )


def _cpu(spec: DomainSpec) -> list[etree._Element]:
    # host-passthrough under KVM; under TCG QEMU's default model boots anything built for x86-64.
    return [E.cpu(mode="host-passthrough")] if spec.virt_type == "kvm" else []


def _seclabel(spec: DomainSpec) -> list[etree._Element]:
    """QEMU as this domain's own uid: what libvirt leaves owned by it after shutdown (the read-only
    identity disk) is readable by no other VM's QEMU."""
    if spec.dac is None:
        return []
    return [E.seclabel(E.label(spec.dac.text), type="static", model="dac", relabel="yes")]


def _disk(
    volume: str, pool: str, fmt: str, dev: str, *extra: etree._Element, relabel: bool = True
) -> etree._Element:
    # relabel='no' (also for the backing chain): the overlay and the shared base stay root-owned
    # 0644, readable by QEMU and writable by no VM, since libvirt never gives read-only disks back.
    keep = [] if relabel else [E.seclabel(model="dac", relabel="no")]
    return E.disk(
        E.driver(name="qemu", type=fmt, discard="unmap"),
        E.source(*keep, pool=pool, volume=volume),
        E.target(dev=dev, bus="virtio"),
        *extra,
        type="volume",
        device="disk",
    )


def _devices(spec: DomainSpec) -> list[etree._Element]:
    v = spec.volumes
    devices = [
        _disk(
            v.boot, spec.pool, "qcow2", "vda", E.readonly(), E.boot(order="1"), relabel=not spec.boot_seclabel
        ),
        _disk(v.var, spec.pool, "qcow2", "vdb", E.serial("var")),
        _disk(v.identity, spec.pool, "raw", "vdc", E.serial("identity"), E.readonly()),
    ]
    net = spec.machine.network
    if net.type in (NetworkType.NETWORK, NetworkType.BRIDGE):
        source = E.source(network=net.name) if net.type is NetworkType.NETWORK else E.source(bridge=net.name)
        devices.append(
            E.interface(
                *_mac(spec),
                source,
                E.model(type="virtio"),
                type=net.type.value,
            )
        )
    devices += [
        E.serial(E.target(port="0"), type="pty"),
        E.console(E.target(type="serial", port="0"), type="pty"),
        E.channel(E.target(type="virtio", name=GUEST_AGENT_CHANNEL), type="unix"),
        E.rng(E.backend("/dev/urandom", model="random"), model="virtio"),
        E.memballoon(model="virtio"),
    ]
    return devices


def _user_network(spec: DomainSpec) -> list[etree._Element]:
    """QEMU's user-mode NIC with restrict=on (the guest reaches nothing but its forwards) and each
    forward bound to 127.0.0.1. Passed as QEMU arguments: libvirt's own <interface type='user'>
    has port forwards only with the passt backend (not in libvirt 9.0), and passt cannot restrict."""
    net = spec.machine.network
    if net.type is not NetworkType.USER:
        return []
    netdev = ",".join(
        [f"user,id={USER_NETDEV},restrict=on"]
        + [f"hostfwd=tcp:127.0.0.1:{f.host}-:{f.guest}" for f in net.forwards]
    )
    mac = spec.machine.mac or (domain_mac(spec.machine_id) if spec.machine_id else None)
    nic = f"virtio-net-pci,netdev={USER_NETDEV}" + (f",mac={mac}" if mac else "") + f",{USER_NIC_ADDRESS}"
    args = ["-netdev", netdev, "-device", nic]
    return [Q.commandline(*(Q.arg(value=a) for a in args))]


def covers(desired: etree._Element, actual: etree._Element) -> bool:
    """True when `actual` (libvirt's XML of a defined domain) holds everything `desired` sets.

    libvirt adds controllers, addresses, aliases and expands machine types, so domains are
    compared parsed and normalised, never as text (a text diff would redefine on every run).
    """
    if desired.tag != actual.tag:
        return False
    for key, value in desired.attrib.items():
        if not _same_attr(key, value, actual.get(key)):
            return False
    if (desired.text or "").strip() and (desired.text or "").strip() != (actual.text or "").strip():
        return False
    remaining = list(actual)
    for child in desired:
        match = next((a for a in remaining if covers(child, a)), None)
        if match is None:
            return False
        remaining.remove(match)
    return True


def _same_attr(key: str, desired: str, actual: str | None) -> bool:
    if actual == desired:
        return True
    # libvirt stores "q35" as "pc-q35-9.2" and "virt" as "virt-9.2".
    return (
        key == "machine"
        and actual is not None
        and (actual.startswith(f"{desired}-") or f"-{desired}-" in actual)
    )
