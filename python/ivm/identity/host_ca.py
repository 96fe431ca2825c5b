"""The user's SSH host CA: where its key may live, and signing a VM's host key with it.

The CA's private key is only ever handed to ssh-keygen by path: ivm never reads, copies, prints or
logs it. Its public half (CA.pub, beside it) is what `ssh-config` trusts and what a certificate's
signer is compared with.
"""

from __future__ import annotations

import logging
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ivm.errors import ToolError, UsageError
from ivm.identity.rules import RULE, Name, check_file
from ivm.identity.sshcert import VALIDITY, Certificate, parse_certificate, principals, resign_reason
from ivm.identity.sshkey import PublicKey, parse_public_key
from ivm.privilege import hand_over
from ivm.run import run

log = logging.getLogger("ivm.identity")
STORE = Path("/nix/store")
HINT_PLACE = (
    "keep the CA key outside the project and the Nix store, e.g. ~/.ssh/ivm_host_ca (chmod 600), "
    "and pass --host-ca or set IVM_HOST_CA to it"
)


@dataclass(frozen=True)
class HostCa:
    """A CA named by the user: the private key's path (never its content) and its public key."""

    path: Path
    public: PublicKey

    def known_hosts_line(self, patterns: str) -> str:
        return f"@cert-authority {patterns} {self.public.type} {self.public.line().split()[1]}\n"


def load_host_ca(path: Path, project_root: Path, *, signing: bool) -> HostCa:
    """Check where the CA lives and read CA.pub. `signing`: the private key must be there too
    (ssh and ssh-config need only CA.pub, but a private key that is there is checked all the same)."""
    given = path.expanduser()
    if not given.is_absolute():
        given = Path.cwd() / given
    real = given.resolve()
    project = project_root.resolve()
    for place in {given, real}:
        if place.is_relative_to(project) or place.is_relative_to(STORE):
            where = "the Nix store" if place.is_relative_to(STORE) else f"the project {project}"
            raise UsageError(f"the host CA key {path} is inside {where}", HINT_PLACE)
    try:
        info = real.stat()
    except FileNotFoundError:
        if signing:
            raise UsageError(f"the host CA key {path} does not exist", HINT_PLACE) from None
        info = None
    except OSError as e:
        raise UsageError(f"cannot read the host CA key {path}: {e.strerror}", HINT_PLACE) from None
    if info is not None:
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"the host CA key {path} is not a regular file", HINT_PLACE)
        if info.st_mode & 0o077:
            raise UsageError(
                f"the host CA key {path} is readable by other users (mode {stat.S_IMODE(info.st_mode):04o})",
                f"run: chmod 600 {path}",
            )
    pub = Path(f"{real}.pub")
    try:
        text = pub.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise UsageError(
            f"cannot read the host CA's public key {pub}: {e.strerror}",
            f"derive it: ssh-keygen -y -f {path} > {pub}",
        ) from None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    try:
        if len(lines) != 1:
            raise ValueError("must hold exactly one public key line")
        public = parse_public_key(lines[0])
    except ValueError as e:
        raise UsageError(f"{pub} {e}", f"derive it: ssh-keygen -y -f {path} > {pub}") from None
    return HostCa(real, public)


def certify(ca: HostCa, directory: Path, name: str, hostname: str) -> str | None:
    """Sign the host key in `directory` unless its certificate is still good; return why it was
    signed, or None. The new certificate is renamed into place whole."""
    key_pub = _read_checked(directory / Name.HOST_KEY_PUB)
    if key_pub is None:
        return None  # nothing to sign yet: create generates the key, then signs it
    why = due(
        ca, parse_public_key(key_pub.strip()).blob, _current(directory / Name.HOST_CERT), name, hostname
    )
    if why is None:
        return None
    with tempfile.TemporaryDirectory(dir=directory, prefix=".keygen-") as tmp:
        target = Path(tmp) / "key.pub"
        target.write_text(key_pub)
        try:
            names = ",".join(principals(name, hostname))
            run(
                [
                    "ssh-keygen",
                    "-q",
                    "-s",
                    str(ca.path),
                    "-h",
                    "-I",
                    name,
                    "-n",
                    names,
                    "-V",
                    VALIDITY,
                    str(target),
                ],
                package="openssh-client (ssh-keygen)",
                input=b"",  # a passphrase prompt reads an empty line and fails, rather than waiting
                what=f"signing the host key of {name}",
            )
        except ToolError as e:
            raise ToolError(
                e.message,
                f"check that {ca.path} is an OpenSSH private key without a passphrase (ivm signs unattended)",
            ) from None
        made = Path(tmp) / "key-cert.pub"
        signed = parse_certificate(made.read_text())
        if signed.ca_blob != ca.public.blob:
            raise UsageError(
                f"{ca.path}.pub is not the public half of {ca.path}",
                f"derive it: ssh-keygen -y -f {ca.path} > {ca.path}.pub",
            )
        made.chmod(0o644)
        hand_over(made, directory)
        made.rename(directory / Name.HOST_CERT)
    log.info("%s: signed its host key with %s (%s)", name, ca.path.name, why)
    return why


def due(ca: HostCa, host_key_blob: bytes, cert: Certificate | None, name: str, hostname: str) -> str | None:
    """Why `cert` must be signed again now, or None."""
    return resign_reason(
        cert,
        host_key_blob=host_key_blob,
        ca_blob=ca.public.blob,
        name=name,
        hostname=hostname,
        now=int(time.time()),
    )


def _read_checked(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return check_file(RULE[Name.HOST_KEY_PUB], data)
    except ValueError as e:
        raise UsageError(f"{path} {e}", "derive it again: ssh-keygen -y -f ssh_host_ed25519_key") from None


def _current(path: Path) -> Certificate | None:
    """The certificate in place, or None when it is absent or unreadable (it is signed anew)."""
    if path.is_symlink() or not path.is_file():
        if path.is_symlink() or path.exists():
            raise UsageError(f"{path} is not a regular file", "delete it; it is signed anew")
        return None
    try:
        return parse_certificate(check_file(RULE[Name.HOST_CERT], path.read_bytes()).strip())
    except ValueError:
        return None
