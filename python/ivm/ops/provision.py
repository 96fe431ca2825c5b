"""`create`: import the base if new, then the VM's boot overlay, var disk and identity disk.

Every step checks what exists first, so an interrupted run is finished by running it again, and a
second run of a complete VM changes nothing. The var disk is never overwritten.
"""

from __future__ import annotations

import logging
import struct
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ivm.domain_xml import domain_uuid
from ivm.errors import ToolError
from ivm.failpoints import failpoint
from ivm.hypervisor.storage import Progress, shares_files
from ivm.hypervisor.uri import parse_uri, secret_notice
from ivm.identity.clashes import check_clashes, check_machine_id_on_hypervisor, warn_unknown_files
from ivm.identity.disk import build_identity_disk
from ivm.identity.source import Identity, generate_missing, load_identity, machine_dir
from ivm.image import (
    QCOW2_MAGIC,
    BaseImage,
    as_qcow2,
    external_reference,
    image_file,
    inspect,
    nix_build,
    private_copy,
)
from ivm.lock import resource_lock
from ivm.ops.session import Hypervisor, VmSession
from ivm.storage_xml import volume_xml
from ivm.volumes import base_hash_of, base_volume

log = logging.getLogger("ivm.create")
GIB = 1024**3
HEADER = 4096  # written last on upload: the qcow2 magic and the ext4 superblock live here
EXT4_MAGIC_AT = 0x438
IMPORT_WAIT_S = 3600.0  # another run importing the same base: a large image over a slow link


class Header(StrEnum):
    """The header an upload writes last, by which a complete volume is known."""

    QCOW2 = "qcow2"  # base images
    EXT4 = "ext4"  # the identity disk


ProgressFactory = Callable[[str, int], AbstractContextManager[Progress]]


@dataclass(frozen=True)
class CreateResult:
    name: str
    base: str
    created: tuple[str, ...]
    kept: tuple[str, ...]
    generated: tuple[str, ...]
    asked: str | None = None  # the base --image asked for, when the VM already runs another

    @property
    def already_existed(self) -> bool:
        return not self.created and not self.generated


def resolve_image(s: VmSession, image: Path | None) -> BaseImage:
    """The base image to use: --image PATH, else `nix build` of the machine's image attribute."""
    if image is None:
        settings = s.settings
        image = nix_build(settings.flake_ref(), s.machine.image_attr, settings.nix, settings.nix_account)
    return inspect(image_file(image))


def vm_identity(s: VmSession, generate: bool = True) -> Identity:
    return checked(s, load_identity(machine_dir(s.settings.project_root, s.name), s.name, generate=generate))


def checked(s: VmSession, identity: Identity) -> Identity:
    """The identity, unless it shares its machine-id, hostname or example keys with another machine."""
    check_clashes(identity, s.name, s.settings.project_root / "machines", s.settings.machines)
    holder = s.hv.domains.name_by_uuid(domain_uuid(identity.machine_id))
    check_machine_id_on_hypervisor(identity, s.name, holder)
    return identity


def create(s: VmSession, image: Path | None, progress: ProgressFactory | None = None) -> CreateResult:
    vols = s.volumes
    directory = machine_dir(s.settings.project_root, s.name)
    generated = tuple(generate_missing(directory, s.name))
    failpoint("create:after-generate")
    identity = checked(s, load_identity(directory, s.name, generate=False))  # before any change
    warn_unknown_files(directory)
    current = boot_base(s.hv, vols.boot)
    if current and is_complete(s.hv, vols.identity, Header.EXT4) and s.hv.storage.volume(vols.var):
        # create never moves a complete VM to another base: that is upgrade's job (it stops the VM).
        asked = inspect(image_file(image)).hash if image is not None else None
        return CreateResult(s.name, current, (), vols.all(), generated, asked if asked != current else None)

    base = resolve_image(s, image)
    s.hv.storage.ensure()
    failpoint("create:after-pool")
    import_base(s.hv, base, progress)
    failpoint("create:after-base-import")
    created: list[str] = []
    kept: list[str] = []
    (created if make_overlay(s.hv, vols.boot, base.hash) else kept).append(vols.boot)
    failpoint("create:after-overlay")
    if is_complete(s.hv, vols.identity, Header.EXT4):
        kept.append(vols.identity)
    else:
        write_identity_disk(s.hv, vols.identity, identity)
        created.append(vols.identity)
    failpoint("create:after-identity")
    if s.hv.storage.volume(vols.var) is not None:
        log.info("keeping the existing var disk %s", vols.var)
        kept.append(vols.var)
    else:
        size = s.machine.var_size_gib * GIB
        s.hv.storage.create(volume_xml(vols.var, size, "qcow2", mode="0600"), vols.var)
        created.append(vols.var)
    failpoint("create:after-var")
    return CreateResult(s.name, base.hash, tuple(created), tuple(kept), generated)


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


def boot_base(hv: Hypervisor, boot: str) -> str | None:
    """The base hash a boot overlay is built on, if the overlay and its base both exist."""
    backing = hv.storage.backing_path(boot)
    if backing is None:
        return None
    base_hash = base_hash_of(Path(backing).name)
    if base_hash is None or not is_complete(hv, base_volume(base_hash), Header.QCOW2):
        return None
    return base_hash


def is_complete(hv: Hypervisor, name: str, kind: Header) -> bool:
    """True if the volume exists and carries its header (uploads write the header last)."""
    head = hv.storage.head(name, HEADER)
    if kind is Header.QCOW2:
        return head[:4] == QCOW2_MAGIC
    return head[EXT4_MAGIC_AT : EXT4_MAGIC_AT + 2] == b"\x53\xef"


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
