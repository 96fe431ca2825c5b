"""Read a VM's identity from machines/<name>/ in the working tree, generating what may be generated.

Generated: machine-id (random), hostname (the VM name), the ed25519 host key pair (ssh-keygen).
Never regenerated: a host key whose public half is committed (that would break known_hosts).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ivm.errors import UsageError
from ivm.identity.rules import MAX_FILE_BYTES, RULE, RULES, Name, Rule, check_file
from ivm.identity.sshcert import Certificate, parse_certificate
from ivm.identity.sshkey import parse_private_ed25519, parse_public_key
from ivm.privilege import hand_over, make_dirs
from ivm.run import run


@dataclass(frozen=True)
class Identity:
    """A validated identity: file name -> content. `files` holds the private key, so no repr."""

    directory: Path
    files: Mapping[Name, bytes] = field(repr=False)

    @property
    def machine_id(self) -> str:
        return self.files[Name.MACHINE_ID].decode().strip()

    @property
    def hostname(self) -> str:
        return self.files[Name.HOSTNAME].decode().strip()

    @property
    def host_public_key(self) -> str:
        return self.files[Name.HOST_KEY_PUB].decode().strip()

    @property
    def host_certificate(self) -> Certificate | None:
        data = self.files.get(Name.HOST_CERT)
        return parse_certificate(data.decode().strip()) if data is not None else None

    @property
    def digest(self) -> str:
        """Names what the identity disk holds, to tell when it must be rebuilt. The private key is
        left out (its public half, which changes with it, is in): no secret feeds a value that is
        stored in the domain XML."""
        h = hashlib.sha256()
        for name in sorted(self.files):
            if name != Name.HOST_KEY:
                h.update(f"{name}\0{len(self.files[name])}\0".encode() + self.files[name])
        return h.hexdigest()[:32]


def machine_dir(root: Path, name: str) -> Path:
    """machines/<name>, refused if it is a symlink: a committed `machines/web1 -> web2` would hand
    web2's host key and machine-id to web1. Every command that reads a machine folder comes here."""
    path = root / "machines" / name
    try:
        info = path.lstat()
    except FileNotFoundError:
        return path
    if stat.S_ISLNK(info.st_mode):
        raise UsageError(
            f"{path} is not a directory but a symbolic link",
            "make it a plain folder holding this machine's own identity files",
        )
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{path} is not a directory", "make it a plain folder holding the identity files")
    return path


def load_identity(directory: Path, hostname: str | None = None, generate: bool = True) -> Identity:
    """Validate the identity files in `directory`; with `generate`, first create the missing ones.

    `hostname` is what a missing hostname file is generated with (the VM name).
    """
    if generate:
        generate_missing(directory, hostname)
    elif not directory.is_dir():
        raise UsageError(f"identity directory {directory} does not exist", "check the path")
    files: dict[Name, bytes] = {}
    for rule in RULES:
        data = _read(directory / rule.name, rule)
        if data is None:
            if rule.required:
                raise UsageError(
                    f"{directory / rule.name} is missing",
                    "run `ivm create` to generate it, or add it to the machine's folder",
                )
            continue
        try:
            check_file(rule, data)
        except ValueError as e:
            raise UsageError(f"{directory / rule.name} {e}", _fix_hint(rule)) from None
        files[rule.name] = data
    _check_key_pair(directory, files)
    return Identity(directory, files)


def read_machine_id(directory: Path) -> str | None:
    """The machine-id file alone, validated, or None when it is absent (nothing is generated)."""
    return read_one(directory, Name.MACHINE_ID)


def read_one(directory: Path, name: Name) -> str | None:
    """One identity file alone, validated and stripped, or None when it is absent."""
    rule = RULE[name]
    data = _read(directory / rule.name, rule)
    if data is None:
        return None
    try:
        check_file(rule, data)
    except ValueError as e:
        raise UsageError(f"{directory / rule.name} {e}", _fix_hint(rule)) from None
    return data.decode().strip()


def generate_missing(directory: Path, hostname: str | None) -> list[Name]:
    """Create missing machine-id, hostname and host key; return what was generated."""
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise UsageError(
            f"{directory} is not a directory", "make it a plain folder holding the identity files"
        )
    _make_folder(directory)
    made: list[Name] = []
    if not _exists(directory / Name.MACHINE_ID):
        _write_new(directory / Name.MACHINE_ID, f"{secrets.token_hex(16)}\n".encode(), 0o644)
        made.append(Name.MACHINE_ID)
    if hostname is not None and not _exists(directory / Name.HOSTNAME):
        _write_new(directory / Name.HOSTNAME, f"{hostname}\n".encode(), 0o644)
        made.append(Name.HOSTNAME)
    key, pub = directory / Name.HOST_KEY, directory / Name.HOST_KEY_PUB
    if not _exists(key):
        if _exists(pub):
            raise UsageError(
                f"{pub} exists but its private key {key.name} does not",
                "copy the private key back (it is git-ignored, so a fresh clone lacks it), "
                f"or delete {pub.name} to generate a new pair",
            )
        _generate_host_key(directory, hostname or directory.name)
        made += [Name.HOST_KEY, Name.HOST_KEY_PUB]
    elif not _exists(pub):
        data = _read(key, RULE[Name.HOST_KEY])
        if data is not None:
            try:
                public = parse_private_ed25519(data.decode("utf-8", errors="replace"))
            except ValueError as e:
                raise UsageError(f"{key} {e}", _fix_hint(RULE[Name.HOST_KEY])) from None
            _write_new(pub, f"{public.line()}\n".encode(), 0o644)
            made.append(Name.HOST_KEY_PUB)
    return made


def _make_folder(directory: Path) -> None:
    """Create the machine folder (and missing parents) 0755 whatever the user's umask: it holds
    public files, and the private key in it is 0600 itself. An existing folder keeps its mode."""
    old = os.umask(0o022)  # make_dirs creates with 0777 & ~umask
    try:
        make_dirs(directory)
    finally:
        os.umask(old)


def _generate_host_key(directory: Path, comment_host: str) -> None:
    # ssh-keygen writes into a private temporary directory; both halves are then renamed into place
    # (private first: a crash in between leaves a key whose .pub is derived on the next run).
    with tempfile.TemporaryDirectory(dir=directory, prefix=".keygen-") as tmp:
        target = Path(tmp) / "key"
        run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{comment_host}", "-f", str(target)],
            package="openssh-client (ssh-keygen)",
            what="generating the SSH host key",
        )
        target.chmod(0o600)
        Path(f"{target}.pub").chmod(0o644)
        hand_over(target, directory)
        hand_over(Path(f"{target}.pub"), directory)
        target.rename(directory / Name.HOST_KEY)
        Path(f"{target}.pub").rename(directory / Name.HOST_KEY_PUB)


def _check_key_pair(directory: Path, files: Mapping[Name, bytes]) -> None:
    private = parse_private_ed25519(files[Name.HOST_KEY].decode())
    public = parse_public_key(files[Name.HOST_KEY_PUB].decode().strip())
    if private.blob != public.blob:
        raise UsageError(
            f"{directory / Name.HOST_KEY_PUB} does not belong to {Name.HOST_KEY}",
            f"regenerate it: ssh-keygen -y -f {directory / Name.HOST_KEY} > {directory / Name.HOST_KEY_PUB}",
        )
    cert = files.get(Name.HOST_CERT)
    if cert is not None and parse_certificate(cert.decode().strip()).key_blob != public.blob:
        raise UsageError(
            f"{directory / Name.HOST_CERT} certifies another host key than {Name.HOST_KEY_PUB}",
            f"sign the key again (pass --host-ca or set IVM_HOST_CA), or delete {Name.HOST_CERT}",
        )


def _exists(path: Path) -> bool:
    return path.is_symlink() or path.exists()


def _read(path: Path, rule: Rule) -> bytes | None:
    """Read a regular file without following symlinks; None if absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as e:
        if path.is_symlink():
            raise UsageError(
                f"{path} is a symbolic link", "identity files must be regular files in the folder"
            ) from None
        raise UsageError(f"cannot read {path}: {e.strerror}", "check its permissions") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)  # before fdopen, which refuses a directory with an IsADirectoryError
        raise UsageError(
            f"{path} is not a regular file", "identity files must be regular files in the folder"
        )
    with os.fdopen(fd, "rb") as f:
        if rule.secret and info.st_mode & 0o077:
            raise UsageError(
                f"{path} is readable by group or others (mode {stat.S_IMODE(info.st_mode):04o})",
                f"run: chmod 600 {path}",
            )
        if info.st_size > MAX_FILE_BYTES:
            raise UsageError(
                f"{path} is {info.st_size} bytes; identity files are limited to {MAX_FILE_BYTES}",
                f"shorten {path.name}",
            )
        return f.read(MAX_FILE_BYTES + 1)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create a file atomically (write a temporary file, then rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        hand_over(fd, path.parent)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    Path(tmp).rename(path)


_HINTS = {
    Name.MACHINE_ID: "delete the file to have a new one generated",
    Name.HOSTNAME: "write one lowercase label, or delete the file to use the VM name",
    Name.HOST_KEY: "delete both key files to have a new pair generated",
    Name.HOST_KEY_PUB: "derive it again: ssh-keygen -y -f ssh_host_ed25519_key",
    Name.HOST_CERT: "sign the host key again (pass --host-ca or set IVM_HOST_CA), or delete the file",
    Name.TCP_PORTS: "write one port number per line",
    Name.UDP_PORTS: "write one port number per line",
    Name.HOSTS: "write lines like '192.0.2.10 db db.example.org'",
    Name.RESOLV_CONF: "write lines like 'nameserver 192.0.2.53' or 'search example.org'",
    Name.ADMIN_KEYS: "write one OpenSSH public key per line",
    Name.USER_KEYS: "write one OpenSSH public key per line",
}


def _fix_hint(rule: Rule) -> str:
    return f"fix {rule.name}: {_HINTS[rule.name]}"
