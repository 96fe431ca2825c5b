"""OpenSSH key formats, parsed in pure Python so that every check is testable and nothing is logged."""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

PRIVATE_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----"
PRIVATE_END = "-----END OPENSSH PRIVATE KEY-----"
MAGIC = b"openssh-key-v1\x00"
ED25519 = "ssh-ed25519"
# Key types current OpenSSH accepts in authorized_keys (ssh-dss was removed in OpenSSH 9.8).
PUBLIC_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


@dataclass(frozen=True)
class PublicKey:
    type: str
    blob: bytes
    comment: str

    def line(self) -> str:
        text = f"{self.type} {base64.b64encode(self.blob).decode()}"
        return f"{text} {self.comment}" if self.comment else text


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("is truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.u32())


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def ed25519_blob(public: bytes) -> bytes:
    return _ssh_string(ED25519.encode()) + _ssh_string(public)


def parse_private_ed25519(text: str) -> PublicKey:
    """Check an unencrypted OpenSSH ed25519 private key; return its public half.

    Raises ValueError with the problem (phrased to follow a file name).
    """
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 3 or lines[0] != PRIVATE_BEGIN or lines[-1] != PRIVATE_END:
        raise ValueError("is not an OpenSSH private key (expected the BEGIN/END OPENSSH lines)")
    try:
        data = base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not an OpenSSH private key (bad base64)") from None
    r = Reader(data)
    if r.take(len(MAGIC)) != MAGIC:
        raise ValueError("is not an OpenSSH private key (bad magic)")
    cipher, _kdf, _kdf_options = r.string(), r.string(), r.string()
    if cipher != b"none":
        raise ValueError("is protected by a passphrase; the guest's sshd needs an unencrypted key")
    if r.u32() != 1:
        raise ValueError("must hold exactly one key")
    public_blob = r.string()
    private = Reader(r.string())
    if private.u32() != private.u32():
        raise ValueError("is corrupt (check integers differ)")
    key_type = private.string().decode(errors="replace")
    if key_type != ED25519:
        raise ValueError(f"is a {key_type} key; an ed25519 key is required")
    public = private.string()
    secret = private.string()
    comment = private.string().decode(errors="replace")
    if len(public) != 32 or len(secret) != 64 or secret[32:] != public:
        raise ValueError("is corrupt (inconsistent ed25519 key material)")
    if public_blob != ed25519_blob(public):
        raise ValueError("is corrupt (public part does not match the private part)")
    return PublicKey(ED25519, public_blob, comment)


def parse_public_key(line: str) -> PublicKey:
    """Parse `type base64 [comment]`; raise ValueError naming the problem."""
    fields = line.strip().split(None, 2)
    if len(fields) < 2:
        raise ValueError("is not a public key line (expected: TYPE BASE64 [COMMENT])")
    key_type, encoded = fields[0], fields[1]
    if key_type not in PUBLIC_KEY_TYPES:
        raise ValueError(f"has an unsupported key type {key_type[:40]!r}")
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("has a key that is not valid base64") from None
    try:
        embedded = Reader(blob).string()
    except ValueError:
        raise ValueError("has a truncated key") from None
    if embedded != key_type.encode():
        raise ValueError(f"says {key_type} but holds a {embedded[:40].decode(errors='replace')} key")
    return PublicKey(key_type, blob, fields[2] if len(fields) > 2 else "")


def split_authorized_key(line: str) -> str:
    """Return the `type base64 [comment]` part of an authorized_keys line, skipping any options."""
    stripped = line.strip()
    if not stripped:
        raise ValueError("is empty")
    first = stripped.split(None, 1)[0]
    if first in PUBLIC_KEY_TYPES or first.startswith(("ssh-", "ecdsa-", "sk-")):
        return stripped
    # Options come first; they may hold quoted spaces, so scan to the first unquoted blank.
    quoted = False
    for i, c in enumerate(stripped):
        if c == '"':
            quoted = not quoted
        elif c in " \t" and not quoted:
            return stripped[i:].strip()
    raise ValueError("has options but no key")
