"""Storage pool and volume XML for libvirt's storage API (pure functions, lxml.builder)."""

from __future__ import annotations

from lxml import etree
from lxml.builder import E


def pool_xml(name: str, path: str) -> str:
    pool = E.pool(
        E.name(name),
        E.target(E.path(path), E.permissions(E.mode("0711"))),
        type="dir",
    )
    return _text(pool)


def source_pool_xml(name: str, path: str) -> str:
    """A pool over a folder of local files, to be started transient (never built: nothing on
    disk changes, not even the folder's permissions)."""
    return _text(E.pool(E.name(name), E.target(E.path(path)), type="dir"))


def volume_xml(
    name: str,
    capacity: int,
    fmt: str,
    *,
    backing_path: str | None = None,
    backing_format: str | None = None,
    mode: str = "0644",
) -> str:
    """A volume of `capacity` bytes allocated lazily; with a backing store for overlays."""
    vol = E.volume(
        E.name(name),
        E.capacity(str(capacity), unit="bytes"),
        E.allocation("0", unit="bytes"),
        E.target(E.format(type=fmt), E.permissions(E.mode(mode))),
    )
    if backing_path is not None:
        vol.append(E.backingStore(E.path(backing_path), E.format(type=backing_format or "qcow2")))
    return _text(vol)


def _text(element: etree._Element) -> str:
    return etree.tostring(element, pretty_print=True, encoding="unicode")
