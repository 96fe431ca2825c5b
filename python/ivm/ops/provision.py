"""`create`: import the base if new, then the VM's boot overlay, var disk and identity disk.

Every step checks what exists first, so an interrupted run is finished by running it again, and a
second run of a complete VM changes nothing. The var disk is never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ivm.config import Settings
from ivm.disks import (
    Header,
    ProgressFactory,
    boot_base,
    import_base,
    is_complete,
    make_overlay,
    make_var_disk,
    write_identity_disk,
)
from ivm.domain_xml import domain_uuid
from ivm.failpoints import failpoint
from ivm.identity.clashes import check_clashes, check_machine_id_on_hypervisor, warn_unknown_files
from ivm.identity.host_ca import certify, due, load_host_ca
from ivm.identity.rules import Name
from ivm.identity.source import Identity, generate_missing, load_identity, machine_dir, read_one
from ivm.identity.sshkey import parse_public_key
from ivm.image import BaseImage, image_file, inspect, nix_build
from ivm.machines import Machine
from ivm.ops.session import VmSession, check_network_reachable


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


def resolve_image(settings: Settings, machine: Machine, image: Path | None) -> BaseImage:
    """The base image to use: --image PATH, else `nix build` of the machine's image attribute."""
    if image is None:
        image = nix_build(settings.flake_ref(), machine.image_attr, settings.nix, settings.nix_account)
    return inspect(image_file(image))


def vm_identity(s: VmSession, generate: bool = True) -> Identity:
    return checked(s, load_identity(machine_dir(s.settings.project_root, s.name), s.name, generate=generate))


def checked(s: VmSession, identity: Identity) -> Identity:
    """The identity, unless it shares its machine-id, hostname or example keys with another machine."""
    check_clashes(identity, s.name, s.settings.project_root / "machines", s.settings.machines)
    holder = s.hv.domains.name_by_uuid(domain_uuid(identity.machine_id))
    check_machine_id_on_hypervisor(identity, s.name, holder)
    return identity


def certify_host_key(s: VmSession) -> str | None:
    """With a host CA (--host-ca, IVM_HOST_CA): sign the VM's host key unless its certificate is
    still good (identity/sshcert.py says when); return why it was signed."""
    if s.settings.host_ca is None:
        return None
    ca = load_host_ca(s.settings.host_ca, s.settings.project_root, signing=True)
    directory = machine_dir(s.settings.project_root, s.name)
    return certify(ca, directory, s.name, read_one(directory, Name.HOSTNAME) or s.name)


def certificate_due(s: VmSession, identity: Identity) -> str | None:
    """What `certify_host_key` would sign the identity's host key for, changing nothing (plan)."""
    if s.settings.host_ca is None:
        return None
    ca = load_host_ca(s.settings.host_ca, s.settings.project_root, signing=True)
    host_key = parse_public_key(identity.host_public_key)
    return due(ca, host_key.blob, identity.host_certificate, s.name, identity.hostname)


def create(s: VmSession, image: Path | None, progress: ProgressFactory | None = None) -> CreateResult:
    check_network_reachable(s.name, s.machine, s.hv.uri)  # before anything is made, for `up`
    vols = s.volumes
    directory = machine_dir(s.settings.project_root, s.name)
    generated = tuple(generate_missing(directory, s.name))
    if certify_host_key(s) is not None:
        generated += (Name.HOST_CERT,)
    failpoint("create:after-generate")
    identity = checked(s, load_identity(directory, s.name, generate=False))  # before any change
    warn_unknown_files(directory)
    current = boot_base(s.hv, vols.boot)
    if current and is_complete(s.hv, vols.identity, Header.EXT4) and s.hv.storage.volume(vols.var):
        # create never moves a complete VM to another base: that is upgrade's job (it stops the VM).
        asked = inspect(image_file(image)).hash if image is not None else None
        return CreateResult(s.name, current, (), vols.all(), generated, asked if asked != current else None)

    base = resolve_image(s.settings, s.machine, image)
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
    (created if make_var_disk(s.hv, vols.var, s.machine.var_size_gib) else kept).append(vols.var)
    failpoint("create:after-var")
    return CreateResult(s.name, base.hash, tuple(created), tuple(kept), generated)
