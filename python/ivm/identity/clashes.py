"""An identity folder copied from another machine: what it must not share with the others.

A copy of machines/web1 keeps web1's machine-id (the domain UUID and MAC derive from it), its
hostname, and the repository's example login keys. Each is refused before anything is created.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable
from pathlib import Path

from ivm.errors import UsageError
from ivm.identity.rules import Name
from ivm.identity.source import Identity
from ivm.identity.sshkey import split_authorized_key

log = logging.getLogger("ivm.identity")

# The example keys in the repository's machines/*/*_authorized_keys: their private halves were
# never kept, so a VM holding only these lets nobody log in.
EXAMPLE_KEY_BLOBS = frozenset(
    {
        "AAAAC3NzaC1lZDI1NTE5AAAAIOVLEFCNbRm90k2Ir6+kophrgejQNqQviGrjA9kmC808",
        "AAAAC3NzaC1lZDI1NTE5AAAAIIS3rHRoq+RtxFY9sbiq5ivs6u/+tdFn/1rhEuciAg8J",
    }
)
# Files in machines/NAME/ that are not identity files but belong there (Nix configuration).
_NOT_IDENTITY_SUFFIXES = (".nix",)


def check_clashes(identity: Identity, name: str, machines_dir: Path, machine_names: Iterable[str]) -> None:
    """Refuse an identity that another machine's folder shares, or a hostname naming another
    machine, or the repository's example login keys."""
    others = sorted((set(machine_names) | _folders(machines_dir)) - {name})
    for other in others:
        if _read_text(machines_dir / other / Name.MACHINE_ID) == identity.machine_id:
            raise UsageError(
                f"{identity.directory / Name.MACHINE_ID} is the machine-id of {other} too "
                "(copied from its folder?)",
                f"delete {identity.directory / Name.MACHINE_ID} to have a new one generated",
            )
    if identity.hostname != name and identity.hostname in others:
        raise UsageError(
            f"{identity.directory / Name.HOSTNAME} names another machine ({identity.hostname})",
            f"write {name} into it, or delete it to use the VM name",
        )
    for file_name in (Name.ADMIN_KEYS, Name.USER_KEYS):
        data = identity.files.get(file_name)
        if data is not None and _example_keys(data.decode()):
            raise UsageError(
                f"{identity.directory / file_name} holds the repository's example key, "
                "whose private half nobody has",
                f"replace it with your own public key (e.g. the line in ~/.ssh/id_ed25519.pub), "
                f"or delete {file_name}",
            )


def check_machine_id_on_hypervisor(identity: Identity, name: str, holder: str | None) -> None:
    """`holder`: the domain on the hypervisor whose UUID derives from this identity's machine-id."""
    if holder is not None and holder != name:
        raise UsageError(
            f"{identity.directory / Name.MACHINE_ID} is the machine-id of domain "
            f"{holder} on the hypervisor (its UUID derives from it)",
            f"delete {identity.directory / Name.MACHINE_ID} to have a new one generated",
        )


def warn_unknown_files(directory: Path) -> list[str]:
    """Warn about files ivm ignores in an identity folder (a misnamed authorized_keys file means
    nobody can log in); return their names."""
    known = {str(n) for n in Name}
    unknown = []
    for entry in sorted(directory.iterdir()) if directory.is_dir() else []:
        if entry.name in known or entry.name.startswith(".") or entry.name.endswith(_NOT_IDENTITY_SUFFIXES):
            continue
        unknown.append(entry.name)
        close = difflib.get_close_matches(entry.name, sorted(known), n=2, cutoff=0.5)
        guess = f"; did you mean {' or '.join(close)}?" if close else ""
        log.warning("%s is not an identity file and is ignored%s", entry, guess)
    return unknown


def _example_keys(text: str) -> bool:
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            fields = split_authorized_key(line).split()
        except ValueError:
            continue
        if len(fields) > 1 and fields[1] in EXAMPLE_KEY_BLOBS:
            return True
    return False


def _folders(machines_dir: Path) -> set[str]:
    try:
        return {p.name for p in machines_dir.iterdir() if p.is_dir() and not p.is_symlink()}
    except OSError:
        return set()


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip() if path.is_file() and not path.is_symlink() else None
    except OSError:
        return None
