"""OpenSSH host certificates (PROTOCOL.certkeys), parsed in pure Python, and when to sign one again."""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from ivm.identity.sshkey import Reader, ed25519_blob

CERT_TYPE = "ssh-ed25519-cert-v01@openssh.com"
HOST_CERT = 2  # SSH2_CERT_TYPE_HOST; 1 is a user certificate
ALIAS_PREFIX = "ivm-"  # `ivm ssh` and `ssh-config` check host keys under the alias ivm-NAME
VALIDITY = "-5m:+365d"  # ssh-keygen -V: five minutes back for clock skew, one year ahead
RENEW_SECONDS = 30 * 86400  # signed again by create/upgrade/apply once less than this is left
FOREVER = 2**64 - 1


@dataclass(frozen=True)
class Certificate:
    key_blob: bytes  # the certified public key, as in its .pub file
    serial: int
    cert_type: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    ca_blob: bytes  # the signing CA's public key

    def expiry(self) -> str:
        if self.valid_before == FOREVER:
            return "never"
        return datetime.fromtimestamp(self.valid_before, UTC).strftime("%Y-%m-%d %H:%M UTC")


def parse_certificate(line: str) -> Certificate:
    """Parse `ssh-ed25519-cert-v01@openssh.com BASE64 [COMMENT]`; ValueError names the problem."""
    fields = line.strip().split(None, 2)
    if len(fields) < 2:
        raise ValueError(f"is not a certificate line (expected: {CERT_TYPE} BASE64 [COMMENT])")
    if fields[0] != CERT_TYPE:
        raise ValueError(f"must be an {CERT_TYPE} certificate, not {fields[0][:40]!r}")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("has a certificate that is not valid base64") from None
    try:
        r = Reader(blob)
        if r.string() != CERT_TYPE.encode():
            raise ValueError(f"does not hold an {CERT_TYPE} certificate")
        r.string()  # nonce
        public = r.string()
        serial = struct.unpack(">Q", r.take(8))[0]
        cert_type = r.u32()
        key_id = r.string().decode("utf-8")
        names = Reader(r.string())
        principals = []
        while names.pos < len(names.data):
            principals.append(names.string().decode("utf-8"))
        valid_after, valid_before = struct.unpack(">QQ", r.take(16))
        r.string(), r.string(), r.string()  # critical options, extensions, reserved
        ca_blob = r.string()
        r.string()  # signature
    except UnicodeDecodeError:
        raise ValueError("has a certificate with a key id or principal that is not UTF-8") from None
    except ValueError as e:
        raise ValueError(f"has a certificate that {e}") from None
    if r.pos != len(blob):
        raise ValueError("has a certificate with trailing data")
    if len(public) != 32:
        raise ValueError("has a certificate whose ed25519 key is not 32 bytes")
    if cert_type != HOST_CERT:
        raise ValueError("holds a user certificate; sshd needs a host certificate (ssh-keygen -h)")
    return Certificate(
        ed25519_blob(public), serial, cert_type, key_id, tuple(principals), valid_after, valid_before, ca_blob
    )


def principals(name: str, hostname: str) -> tuple[str, ...]:
    """The names a VM's certificate vouches for: the VM, its hostname, and the alias ivm's ssh
    options check the key under (ssh matches a certificate against HostKeyAlias when it is set)."""
    return tuple(dict.fromkeys((name, hostname, f"{ALIAS_PREFIX}{name}")))


def resign_reason(
    cert: Certificate | None,
    *,
    host_key_blob: bytes,
    ca_blob: bytes,
    name: str,
    hostname: str,
    now: int,
) -> str | None:
    """Why the certificate must be signed again, or None when it is still good. Signing makes a new
    file each time (a random nonce), so a good certificate is kept: an unchanged VM stays unchanged."""
    if cert is None:
        return "no host certificate yet"
    expiring = cert.valid_before != FOREVER and cert.valid_before - now < RENEW_SECONDS
    reasons = (
        (cert.key_blob != host_key_blob, "the host key changed"),
        (cert.ca_blob != ca_blob, "it was signed by another CA"),
        (
            cert.key_id != name or sorted(cert.principals) != sorted(principals(name, hostname)),
            "it names other principals",
        ),
        (cert.valid_after > now, "it is not valid yet"),
        (expiring, f"it expire{'s' if cert.valid_before > now else 'd'} {cert.expiry()}"),
    )
    return next((why for bad, why in reasons if bad), None)
