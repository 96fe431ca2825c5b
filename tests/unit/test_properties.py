"""Property tests: no input makes a parser raise anything but its documented error, and every valid
machine yields a domain that libvirt's test driver accepts and that `define` then sees as current."""

from __future__ import annotations

import base64
import contextlib
import json
import string
import struct
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from lxml import etree

from ivm.domain_xml import DomainSpec, Firmware, Metadata, covers, domain_element, domain_xml, read_metadata
from ivm.errors import UsageError
from ivm.identity import rules
from ivm.identity.sshkey import (
    MAGIC,
    PRIVATE_BEGIN,
    PRIVATE_END,
    ed25519_blob,
    parse_private_ed25519,
    parse_public_key,
    split_authorized_key,
)
from ivm.machines import (
    MAX_MEMORY_MIB,
    MAX_VAR_SIZE_GIB,
    SYSTEMS,
    Machine,
    Network,
    NetworkType,
    parse_machines,
)
from ivm.names import NAME_RE, check_vm_name
from ivm.volumes import vm_volumes

# Derandomized: the same examples on every run and in CI; no example database left in the tree.
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Text that reaches the interesting branches: key words, separators, digits, control characters.
ALPHABET = st.sampled_from(
    [*string.printable, "\x00", "\x1b", "\u00e9", "\u2028", "\ufeff", "ssh-ed25519", "nameserver", "#", '"']
)
TEXT = st.one_of(st.text(), st.lists(ALPHABET, max_size=80).map("".join))


# --- machines.json ---------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
FIELD_VALUES = {
    "system": st.sampled_from([*SYSTEMS, "riscv64-linux", ""]) | JSON_VALUES,
    "vcpus": st.integers(-2, 600) | JSON_VALUES,
    "memory_mib": st.integers(-1, MAX_MEMORY_MIB + 1) | JSON_VALUES,
    "var_size_gib": st.integers(-1, MAX_VAR_SIZE_GIB + 1) | JSON_VALUES,
    "network": st.fixed_dictionaries(
        {"type": st.sampled_from(["network", "bridge", "none", "macvtap"])},
        optional={"name": st.text(max_size=70) | JSON_VALUES},
    )
    | JSON_VALUES,
    "mac": st.none() | st.from_regex(r"[0-9a-fA-F:]{17}", fullmatch=True) | JSON_VALUES,
    "libvirt_uri": st.none()
    | st.sampled_from(["qemu:///system", "qemu+ssh://h/system", "x y"])
    | JSON_VALUES,
    "image_attr": st.text(max_size=20) | JSON_VALUES,
}
ENTRIES = st.fixed_dictionaries({}, optional=FIELD_VALUES)
DOCUMENTS = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 1, 1, 2, "1", True, None])},
    optional={"machines": st.dictionaries(st.text(max_size=10) | st.just("web1"), ENTRIES, max_size=3)},
)


@SETTINGS
@given(TEXT)
@example("")
@example("[]")
@example('{"version": 1, "machines": {"a": {}}}')
def test_parse_machines_text(text: str) -> None:
    with contextlib.suppress(UsageError):
        parse_machines(text)


@SETTINGS
@given(st.one_of(JSON_VALUES, DOCUMENTS))
def test_parse_machines_documents(doc: Any) -> None:
    try:
        machines = parse_machines(json.dumps(doc))
    except UsageError as e:
        assert e.hint, e.message
        return
    for name, machine in machines.items():
        assert machine.name == name and NAME_RE.fullmatch(name)
        assert machine.vcpus >= 1 and 64 <= machine.memory_mib <= MAX_MEMORY_MIB


# --- identity rules and keys -----------------------------------------------------------------------


@SETTINGS
@given(st.sampled_from(rules.RULES), st.one_of(st.binary(max_size=300), TEXT.map(str.encode)))
def test_every_identity_rule(rule: rules.Rule, data: bytes) -> None:
    try:
        text = rules.check_file(rule, data)
    except ValueError:
        return
    # Whatever passes is text without control characters that the guest can take line by line.
    assert "\r" not in text and all(c == "\t" or c.isprintable() for line in text.split("\n") for c in line)


@SETTINGS
@given(st.sampled_from(rules.RULES), TEXT)
def test_every_rule_check_on_text(rule: rules.Rule, text: str) -> None:
    with contextlib.suppress(ValueError):
        rule.check(text)


@SETTINGS
@given(TEXT)
@example("")
@example("   ")
@example('from="a b" ')
def test_split_authorized_key(line: str) -> None:
    with contextlib.suppress(ValueError):
        split_authorized_key(line)


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


@st.composite
def public_key_lines(draw: st.DrawFn) -> str:
    """`TYPE BASE64 [COMMENT]` lines whose blob is random, truncated or well-formed."""
    key_type = draw(st.sampled_from(["ssh-ed25519", "ssh-rsa", "ssh-dss", "x"]))
    blob = draw(
        st.one_of(
            st.binary(max_size=60),
            st.builds(lambda t, k: _ssh_string(t.encode()) + _ssh_string(k), st.just(key_type), st.binary()),
            st.builds(ed25519_blob, st.binary(min_size=32, max_size=32)),
        )
    )
    comment = draw(st.one_of(st.just(""), st.text(max_size=10)))
    return f"{key_type} {base64.b64encode(blob).decode()} {comment}"


@SETTINGS
@given(st.one_of(TEXT, public_key_lines()))
def test_parse_public_key(line: str) -> None:
    try:
        key = parse_public_key(line)
    except ValueError:
        return
    assert key.type == line.split(maxsplit=1)[0]
    assert parse_public_key(key.line()) == key  # what ivm writes back reads as the same key


@st.composite
def private_keys(draw: st.DrawFn) -> str:
    """OpenSSH private key armour around random, truncated or nearly valid bodies."""
    public = draw(st.binary(min_size=32, max_size=32))
    secret = draw(st.binary(min_size=32, max_size=32)) + public
    check = draw(st.integers(0, 2**32 - 1))
    inner = (
        struct.pack(">II", check, draw(st.sampled_from([check, check ^ 1])))
        + _ssh_string(draw(st.sampled_from([b"ssh-ed25519", b"ssh-rsa", b""])))
        + _ssh_string(public)
        + _ssh_string(draw(st.sampled_from([secret, secret[:40], b""])))
        + _ssh_string(draw(st.binary(max_size=8)))
    )
    body = (
        MAGIC
        + _ssh_string(draw(st.sampled_from([b"none", b"aes256-ctr"])))
        + _ssh_string(b"none")
        + _ssh_string(b"")
        + struct.pack(">I", draw(st.sampled_from([1, 1, 2, 0])))
        + _ssh_string(draw(st.sampled_from([ed25519_blob(public), b"junk"])))
        + _ssh_string(inner)
    )
    cut = draw(st.integers(0, len(body)))
    body = draw(st.sampled_from([body, body[:cut], draw(st.binary(max_size=120))]))
    encoded = base64.b64encode(body).decode()
    return f"{PRIVATE_BEGIN}\n{encoded}\n{PRIVATE_END}\n"


@SETTINGS
@given(st.one_of(TEXT, private_keys()))
def test_parse_private_ed25519(text: str) -> None:
    try:
        key = parse_private_ed25519(text)
    except ValueError:
        return
    assert key.type == "ssh-ed25519" and len(key.blob) == 51


@SETTINGS
@given(TEXT)
@example("")
@example("a" * 63)
def test_check_vm_name(name: str) -> None:
    try:
        checked = check_vm_name(name)
    except UsageError as e:
        assert e.hint and "\n" not in e.message
        return
    # A name that passes is safe in every name derived from it: volumes, locks, domains.
    assert checked == name and name.isascii() and "/" not in name and ".." not in name
    assert all("/" not in v for v in vm_volumes(name).all())


# --- the domain XML builder against libvirt's test driver -------------------------------------------

NAMES = st.from_regex(NAME_RE, fullmatch=True).filter(lambda n: not n.endswith("-"))
HEX32 = st.text("0123456789abcdef", min_size=32, max_size=32).filter(lambda h: h != "0" * 32)
MACS = st.none() | st.builds(
    lambda b: ":".join(f"{x:02x}" for x in [b[0] & 0xFE, *b[1:]]), st.binary(min_size=6, max_size=6)
)
NETWORKS = st.one_of(
    st.just(Network(NetworkType.NONE)),
    st.builds(
        Network,
        st.sampled_from([NetworkType.NETWORK, NetworkType.BRIDGE]),
        st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True),
    ),
)
MACHINES = st.builds(
    Machine,
    name=NAMES,
    system=st.just("x86_64-linux"),
    vcpus=st.integers(1, 512),
    memory_mib=st.integers(64, MAX_MEMORY_MIB),
    var_size_gib=st.integers(1, MAX_VAR_SIZE_GIB),
    network=NETWORKS,
    mac=MACS,
    libvirt_uri=st.none(),
    image_attr=st.just("image-x"),
)
FIRMWARE = st.sampled_from(
    [Firmware(), Firmware("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd")]
)


@pytest.fixture(scope="module")
def test_conn() -> Iterator[Any]:
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()


@settings(SETTINGS, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    machine=MACHINES,
    machine_id=HEX32,
    base=st.text("0123456789abcdefghijklmnopqrstuvwxyz", min_size=32, max_size=32),
    previous=st.none() | st.text("0123456789abcdef", min_size=32, max_size=32),
    firmware=FIRMWARE,
)
def test_domain_xml_is_accepted_by_libvirt(
    test_conn: Any, machine: Machine, machine_id: str, base: str, previous: str | None, firmware: Firmware
) -> None:
    assume(machine.name not in {d.name() for d in test_conn.listAllDomains(0)})
    spec = DomainSpec(
        name=machine.name,
        machine=machine,
        machine_id=machine_id,
        pool="ivm",
        volumes=vm_volumes(machine.name),
        metadata=Metadata(machine.name, base, previous, "0.0.0"),
        virt_type="test",
        firmware=firmware,
    )
    xml = domain_xml(spec)
    assert "/nix/store" not in xml
    dom = test_conn.defineXML(xml)
    try:
        actual = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        # What libvirt kept is what ivm wrote: `define` run again sees nothing to change.
        assert covers(domain_element(spec), etree.fromstring(actual.encode()))
        assert read_metadata(actual) == spec.metadata
    finally:
        dom.undefine()
