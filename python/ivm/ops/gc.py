"""`gc`: delete base volumes that nothing references, on every hypervisor the machines use.

Referenced means: the base or previous base in any ivm domain's metadata (kept for rollback), any
disk of any domain (ivm's or not), or the backing store of any volume in the pool (a VM that is
created but not yet defined). A base being imported right now is skipped (its lock is held).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from ivm.config import Settings
from ivm.domain_xml import read_metadata
from ivm.errors import ToolError
from ivm.hypervisor.host import Hypervisor
from ivm.lock import resource_lock
from ivm.ops.session import open_hypervisor
from ivm.volumes import base_hash_of


@dataclass(frozen=True)
class GcResult:
    uri: str
    deleted: tuple[str, ...]
    kept: tuple[str, ...]
    busy: tuple[str, ...]
    why: tuple[tuple[str, str], ...] = ()  # (kept base, what refers to it)

    def reason(self, base: str) -> str:
        return "; ".join(r for b, r in self.why if b == base)


def gc(settings: Settings, dry_run: bool) -> list[GcResult]:
    return [gc_pool(settings, uri, dry_run) for uri in hypervisor_uris(settings)]


def hypervisor_uris(settings: Settings) -> list[str]:
    """--connect alone, else every URI the machines use (the default one without a machines file)."""
    if settings.connect or settings.machines_file is None:
        return [settings.uri_for(None)]
    return sorted({settings.uri_for(m) for m in settings.machines.values()} or {settings.uri_for(None)})


def gc_pool(settings: Settings, uri: str, dry_run: bool) -> GcResult:
    with open_hypervisor(settings, uri) as hv:
        if hv.storage.find() is None:
            return GcResult(uri, (), (), ())
        volumes = hv.storage.volume_names()
        bases = [v for v in volumes if base_hash_of(v)]
        reasons = base_references(hv, volumes)
        used = set(reasons)
        deleted: list[str] = []
        busy: list[str] = []
        for name in bases:
            if name in used:
                continue
            if dry_run:
                deleted.append(name)
                continue
            try:
                with resource_lock(uri, f"_{name}"):
                    hv.storage.delete(name)
                    deleted.append(name)
            except ToolError:
                busy.append(name)
        kept = tuple(sorted(used & set(bases)))
        why = tuple((b, r) for b in kept for r in reasons[b])
        return GcResult(uri, tuple(deleted), kept, tuple(busy), why)


def base_references(hv: Hypervisor, volumes: list[str]) -> dict[str, list[str]]:
    """Each referenced base volume with what refers to it, in words."""
    why: dict[str, list[str]] = {}

    def note(base: str, reason: str) -> None:
        if reason not in why.setdefault(base, []):
            why[base].append(reason)

    for dom in hv.domains.all():
        xml = hv.domains.xml(dom)
        meta = read_metadata(xml)
        name = dom.name()
        if meta is not None:
            note(f"base-{meta.base}.qcow2", f"{name} runs it")
            if meta.previous_base:
                note(f"base-{meta.previous_base}.qcow2", f"{name}'s previous base, for rollback")
        root = etree.fromstring(xml.encode())
        for source in root.iterfind("devices/disk/source"):
            for ref in (source.get("volume"), source.get("file")):
                if ref and base_hash_of(Path(ref).name):
                    note(Path(ref).name, f"a disk of domain {name}")
    for vol in volumes:
        if base_hash_of(vol):
            continue
        backing = hv.storage.backing_path(vol)
        if backing and base_hash_of(Path(backing).name):
            note(Path(backing).name, f"backs volume {vol}")
    return why
