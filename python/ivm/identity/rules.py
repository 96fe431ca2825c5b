"""What each identity file may contain. Pure checks on text; the guest applies the same rules again
(modules/identity-import.sh), and tests/cases/identity.json holds the cases both sides must agree on."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from ivm.identity.sshcert import parse_certificate
from ivm.identity.sshkey import PublicKey, parse_private_ed25519, parse_public_key, split_authorized_key

MAX_FILE_BYTES = 64 * 1024
LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
DNS_NAME_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)
ZONE_RE = re.compile(r"[A-Za-z0-9_.-]+")
BASE64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
RESOLV_KEYWORDS = frozenset({"nameserver", "search", "domain", "options", "sortlist"})


class Name(StrEnum):
    """The identity files, by the names the specification gives them."""

    MACHINE_ID = "machine-id"
    HOSTNAME = "hostname"
    HOST_KEY = "ssh_host_ed25519_key"
    HOST_KEY_PUB = "ssh_host_ed25519_key.pub"
    HOST_CERT = "ssh_host_ed25519_key-cert.pub"  # optional: signed by the user's host CA
    RESOLV_CONF = "resolv.conf"
    HOSTS = "hosts"
    TCP_PORTS = "tcp_ports"
    UDP_PORTS = "udp_ports"
    ADMIN_KEYS = "admin_authorized_keys"
    USER_KEYS = "user_authorized_keys"


def check_machine_id(text: str) -> None:
    value = text.removesuffix("\n")
    if not re.fullmatch(r"[0-9a-f]{32}", value):
        raise ValueError("must be 32 lowercase hexadecimal characters and a newline (machine-id(5))")
    if value == "0" * 32:
        raise ValueError("must not be all zeros")


def check_hostname(text: str) -> None:
    value = text.removesuffix("\n")
    if not LABEL_RE.fullmatch(value):
        raise ValueError(f"must be one hostname label (a-z, 0-9, '-', at most 63), not {value[:70]!r}")


def check_ports(text: str) -> None:
    for number, line in _content_lines(text):
        if not re.fullmatch(r"[0-9]{1,5}", line) or not 1 <= int(line) <= 65535:
            raise ValueError(f"line {number}: {line[:40]!r} is not a port number from 1 to 65535")


def check_hosts(text: str) -> None:
    for number, line in _content_lines(text):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        _check_ip(number, fields[0])
        if len(fields) < 2:
            raise ValueError(f"line {number}: an address needs at least one host name")
        for name in fields[1:]:
            if not DNS_NAME_RE.fullmatch(name):
                raise ValueError(f"line {number}: {name[:70]!r} is not a valid host name")


def check_resolv_conf(text: str) -> None:
    for number, line in _content_lines(text, comments="#;"):
        keyword, *args = line.split()
        if keyword not in RESOLV_KEYWORDS:
            raise ValueError(
                f"line {number}: unknown keyword {keyword[:40]!r} "
                f"(expected one of {', '.join(sorted(RESOLV_KEYWORDS))})"
            )
        if keyword == "nameserver":
            if len(args) != 1:
                raise ValueError(f"line {number}: nameserver takes exactly one address")
            _check_ip(number, args[0])
        elif keyword in {"search", "domain"}:
            if not args:
                raise ValueError(f"line {number}: {keyword} needs at least one domain")
            for name in args:
                if not DNS_NAME_RE.fullmatch(name):
                    raise ValueError(f"line {number}: {name[:70]!r} is not a valid domain")


def check_authorized_keys(text: str) -> None:
    for number, line in _content_lines(text):
        try:
            _parse_key(split_authorized_key(line))
        except ValueError as e:
            raise ValueError(f"line {number} {e}") from None


def check_public_key(text: str) -> None:
    lines = [line for _, line in _content_lines(text)]
    if len(lines) != 1:
        raise ValueError("must hold exactly one public key line")
    if _parse_key(lines[0]).type != "ssh-ed25519":
        raise ValueError("must be an ssh-ed25519 public key")


def check_certificate(text: str) -> None:
    lines = [line for _, line in _content_lines(text)]
    if len(lines) != 1:
        raise ValueError("must hold exactly one certificate line")
    fields = lines[0].split()
    if len(fields) >= 2 and not (BASE64_RE.fullmatch(fields[1]) and len(fields[1]) % 4 == 0):
        raise ValueError("has a certificate that is not valid base64")
    parse_certificate(lines[0])


def _parse_key(line: str) -> PublicKey:
    """parse_public_key, refusing also the excess padding Python's base64 decoder lets through."""
    fields = line.split()
    if len(fields) >= 2 and not (BASE64_RE.fullmatch(fields[1]) and len(fields[1]) % 4 == 0):
        raise ValueError("has a key that is not valid base64")
    return parse_public_key(line)


def check_private_key(text: str) -> None:
    parse_private_ed25519(text)


def _check_ip(number: int, text: str) -> None:
    address, percent, zone = text.partition("%")
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"line {number}: {text[:60]!r} is not an IP address") from None
    # A zone (fe80::1%eth0) names an interface, and only IPv6 has them.
    if percent and (parsed.version != 6 or not ZONE_RE.fullmatch(zone)):
        raise ValueError(f"line {number}: {text[:60]!r} is not an IP address") from None


def _content_lines(text: str, comments: str = "#") -> list[tuple[int, str]]:
    """Non-blank, non-comment lines with their 1-based numbers."""
    out = []
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if stripped and stripped[0] not in comments:
            out.append((number, stripped))
    return out


def check_text(data: bytes) -> str:
    """Common rules for every identity file: size, UTF-8, no control characters."""
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"is {len(data)} bytes; identity files are limited to {MAX_FILE_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8 text") from None
    for number, line in enumerate(text.split("\n"), start=1):
        if "\r" in line:
            raise ValueError(f"line {number} ends in CR (Windows line endings); use LF only")
        if not all(c == "\t" or c.isprintable() for c in line):
            raise ValueError(f"line {number} holds a control character")
    return text


@dataclass(frozen=True)
class Rule:
    name: Name
    mode: int  # mode on the identity disk and in /var/identity
    check: Callable[[str], None]
    required: bool  # the tool generates it when missing (machine-id, hostname, host key)
    secret: bool = False


RULES: tuple[Rule, ...] = (
    Rule(Name.MACHINE_ID, 0o644, check_machine_id, required=True),
    Rule(Name.HOSTNAME, 0o644, check_hostname, required=True),
    Rule(Name.HOST_KEY, 0o600, check_private_key, required=True, secret=True),
    Rule(Name.HOST_KEY_PUB, 0o644, check_public_key, required=True),
    Rule(Name.HOST_CERT, 0o644, check_certificate, required=False),
    Rule(Name.RESOLV_CONF, 0o644, check_resolv_conf, required=False),
    Rule(Name.HOSTS, 0o644, check_hosts, required=False),
    Rule(Name.TCP_PORTS, 0o644, check_ports, required=False),
    Rule(Name.UDP_PORTS, 0o644, check_ports, required=False),
    Rule(Name.ADMIN_KEYS, 0o644, check_authorized_keys, required=False),
    Rule(Name.USER_KEYS, 0o644, check_authorized_keys, required=False),
)


def check_file(rule: Rule, data: bytes) -> str:
    """Validate one file's bytes; return its text. Raises ValueError phrased to follow its name."""
    text = check_text(data)
    rule.check(text)
    return text


RULE: dict[Name, Rule] = {rule.name: rule for rule in RULES}
