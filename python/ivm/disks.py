"""A VM's disks in the pool: the shared base, its boot overlay, its identity disk and its var disk.

Completeness is told by the header, written last: every upload (hypervisor/storage.py
`import_file`) sends a volume's first `HEADER` bytes after everything else, so a volume without its
qcow2 magic or ext4 superblock magic is an interrupted upload, redone and never used. libvirt
cannot rename a volume, so a temporary name could not say it instead.
"""

from __future__ import annotations

import logging
import struct
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from enum import StrEnum
from pathlib import Path

from ivm.errors import ToolError
from ivm.failpoints import failpoint
from ivm.hypervisor.host import Hypervisor
from ivm.hypervisor.storage import Progress, shares_files
from ivm.hypervisor.uri import parse_uri, secret_notice
from ivm.identity.disk import build_identity_disk, digest_in_superblock
from ivm.identity.source import Identity
from ivm.image import QCOW2_MAGIC, BaseImage, as_qcow2, external_reference, private_copy
from ivm.lock import resource_lock
from ivm.storage_xml import volume_xml
from ivm.volumes import base_hash_of, base_volume

log = logging.getLogger("ivm.disks")
GIB = 1024**3
HEADER = 4096  # written last on upload: the qcow2 magic and the ext4 superblock live here
EXT4_MAGIC_AT = 0x438
EXT4_MAGIC = b"\x53\xef"
IMPORT_WAIT_S = 3600.0  # another run importing the same base: a large image over a slow link

ProgressFactory = Callable[[str, int], AbstractContextManager[Progress]]


class Header(StrEnum):
    """The header an upload writes last, by which a complete volume is known."""

    QCOW2 = "qcow2"  # base images
    EXT4 = "ext4"  # the identity disk


def has_header(head: bytes, kind: Header) -> bool:
    """True if the first bytes of a volume carry the magic of `kind`."""
    if kind is Header.QCOW2:
        return head[:4] == QCOW2_MAGIC
    return head[EXT4_MAGIC_AT : EXT4_MAGIC_AT + 2] == EXT4_MAGIC


def is_complete(hv: Hypervisor, name: str, kind: Header) -> bool:
    """True if the volume exists and carries its header (uploads write the header last)."""
    return has_header(hv.storage.head(name, HEADER), kind)


def identity_digest(head: bytes) -> str | None:
    """The identity digest an identity disk records, from its first bytes; None if incomplete."""
    return digest_in_superblock(head) if has_header(head, Header.EXT4) else None


def import_base(hv: Hypervisor, base: BaseImage, progress: ProgressFactory | None) -> str:
    """Upload the base as base-<hash>.qcow2 unless a complete copy is already in the pool."""
    name = base_volume(base.hash)
    with resource_lock(
        hv.uri, f"_{name}", wait=IMPORT_WAIT_S
    ):  # two VMs created at once import one base once
        failpoint("create:base-locked")
        if is_complete(hv, name, Header.QCOW2):
            log.debug("base %s is already in pool %s", name, hv.storage.name)
            self_contained(hv, name)
            return name
        if hv.storage.delete(name):
            log.info("replacing the incomplete base volume %s", name)
        with tempfile.TemporaryDirectory(prefix="ivm-base-") as tmp:
            source = as_qcow2(base, Path(tmp))
            local = shares_files(hv.uri)  # the daemon copies a private file itself (storage.py)
            if local and source == base.path:
                source = private_copy(base.path, Path(tmp) / "base.qcow2")
            failpoint("create:base-converted")
            log.info("importing %s as %s", base.path.name, name)
            total = source.stat().st_size
            bar = progress(f"importing {name}", total) if progress else nullcontext(None)
            with bar as update:
                hv.storage.import_file(
                    name, source, header=HEADER, mode="0644", progress=update, disposable=local
                )
        if not is_complete(hv, name, Header.QCOW2):
            raise ToolError(
                f"the uploaded base {name} is not a valid qcow2 image",
                "run the command again; if it persists, check the image file",
            )
    return name


def make_overlay(hv: Hypervisor, boot: str, base_hash: str) -> bool:
    """Create the boot overlay on `base_hash`; replace one that points elsewhere. True if made.

    The overlay is attached read-only, so it never holds data and may always be recreated.
    """
    base_name = base_volume(base_hash)
    base_path = hv.storage.volume_path(base_name)
    if hv.storage.volume(boot) is not None:
        if hv.storage.backing_path(boot) == base_path:
            return False
        hv.storage.delete(boot)
        failpoint("create:overlay-deleted")
    self_contained(hv, base_name)
    size = qcow2_virtual_size(hv.storage.head(base_name, HEADER))
    hv.storage.create(volume_xml(boot, size, "qcow2", backing_path=base_path, backing_format="qcow2"), boot)
    return True


def write_identity_disk(hv: Hypervisor, name: str, identity: Identity) -> None:
    notice = secret_notice(parse_uri(hv.uri), name)
    if notice:
        log.warning(notice)
    with tempfile.TemporaryDirectory(prefix="ivm-identity-") as tmp:
        image = build_identity_disk(identity, Path(tmp) / "identity.img")
        failpoint("create:identity-built")
        hv.storage.delete(name, wipe=True)  # the old image holds the private key
        failpoint("create:identity-deleted")
        hv.storage.import_file(name, image, header=HEADER, mode="0600", secret=True)


def make_var_disk(hv: Hypervisor, name: str, size_gib: int) -> bool:
    """Create the var disk if absent; True if made. An existing one is never replaced."""
    if hv.storage.volume(name) is not None:
        log.info("keeping the existing var disk %s", name)
        return False
    hv.storage.create(volume_xml(name, size_gib * GIB, "qcow2", mode="0600"), name)
    return True


def boot_base(hv: Hypervisor, boot: str) -> str | None:
    """The base hash a boot overlay is built on, if the overlay and its base both exist."""
    backing = hv.storage.backing_path(boot)
    if backing is None:
        return None
    base_hash = base_hash_of(Path(backing).name)
    if base_hash is None or not is_complete(hv, base_volume(base_hash), Header.QCOW2):
        return None
    return base_hash


def self_contained(hv: Hypervisor, name: str) -> None:
    """Refuse a base volume whose header makes QEMU open another file (backing or data file)."""
    reason = external_reference(hv.storage.head(name, HEADER))
    if reason is not None:
        raise ToolError(
            f"base volume {name} in pool {hv.storage.name} refers to {reason}; ivm will not use it",
            f"delete it (virsh vol-delete --pool {hv.storage.name} {name}) and run the command again",
        )


def qcow2_virtual_size(head: bytes) -> int:
    if head[:4] != QCOW2_MAGIC or len(head) < 32:
        raise ToolError("the base volume is not a qcow2 image", "re-run the command to re-import it")
    size: int = struct.unpack(">Q", head[24:32])[0]
    return size
