"""machines.json (made by Nix from each machines/<name>/meta.nix) loaded into frozen dataclasses.

Every violation is a usage error that names its JSON path, e.g. `machines.web1.vcpus`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn

from ivm.errors import UsageError
from ivm.hypervisor.uri import UnsafeUriError, parse_uri
from ivm.names import NAME_RE

SCHEMA_VERSION = 1
MAX_VCPUS = 512
MAX_MEMORY_MIB = 4 * 1024 * 1024  # 4 TiB
MAX_VAR_SIZE_GIB = 64 * 1024  # 64 TiB
SYSTEMS = {"x86_64-linux": "x86_64", "aarch64-linux": "aarch64"}
MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
IMAGE_ATTR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
BRIDGE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class NetworkType(StrEnum):
    NETWORK = "network"
    BRIDGE = "bridge"
    NONE = "none"


@dataclass(frozen=True)
class Network:
    type: NetworkType
    name: str = ""  # the libvirt network or host bridge; empty for "none"


@dataclass(frozen=True)
class Machine:
    name: str
    system: str
    vcpus: int
    memory_mib: int
    var_size_gib: int
    network: Network
    mac: str | None
    libvirt_uri: str | None
    image_attr: str
    health_check: tuple[str, ...] = ()  # argv run in the guest by its agent after an upgrade

    @property
    def arch(self) -> str:
        return SYSTEMS[self.system]


_FIELDS = (
    "system",
    "vcpus",
    "memory_mib",
    "var_size_gib",
    "network",
    "mac",
    "libvirt_uri",
    "image_attr",
)


def defaults(name: str) -> dict[str, Any]:
    """The fields a machine may leave out, with the values nix/machine-meta.nix gives them."""
    return {
        "vcpus": 2,
        "memory_mib": 2048,
        "var_size_gib": 20,
        "network": {"type": "network", "name": "default"},
        "mac": None,
        "libvirt_uri": None,
        "image_attr": f"image-{name}",
    }


def load_machines(path: Path) -> Mapping[str, Machine]:
    """Read and validate a machines.json file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"machines file {path} does not exist",
            "pass --machines FILE or set IVM_MACHINES (with Nix, `nix build .#machines-json` makes "
            "one, or write one by hand like docs/machines.example.json)",
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(
            f"cannot read machines file {path}: {e}",
            "pass a UTF-8 JSON file (made by `nix build .#machines-json`, or written by hand)",
        ) from None
    return parse_machines(text, source=str(path))


def parse_machines(text: str, source: str = "machines.json") -> Mapping[str, Machine]:
    """Validate machines.json text; pure, so it can be tested without files."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(
            f"{source} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})",
            "fix the file if you wrote it; with Nix, regenerate it with `nix build .#machines-json`",
        ) from None
    if not isinstance(doc, dict):
        _bad(source, "", "must be a JSON object")
    version = doc.get("version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise UsageError(
            f"{source}: unsupported version {version!r} (this ivm reads version {SCHEMA_VERSION})",
            "use the ivm from the same flake revision that produced the file",
        )
    _no_extra(source, "", doc, {"version", "machines"})
    machines = doc.get("machines")
    if not isinstance(machines, dict):
        _bad(source, "machines", "must be an object of machine name to settings")
    return {name: _machine(source, name, entry) for name, entry in machines.items()}


def _machine(source: str, name: str, entry: Any) -> Machine:
    at = f"machines.{name}"
    if not NAME_RE.fullmatch(name) or name.endswith("-"):
        _bad(source, at, "is not a valid VM name ([a-z][a-z0-9-]{0,62}, not ending in '-')")
    if not isinstance(entry, dict):
        _bad(source, at, "must be an object")
    _no_extra(source, at, entry, {*_FIELDS, "health_check"})
    if "system" not in entry:
        _bad(source, f"{at}.system", f"is missing (one of {', '.join(sorted(SYSTEMS))})")
    entry = {**defaults(name), **entry}  # what meta.nix defaults, a hand-written file may leave out
    system = entry["system"]
    if not isinstance(system, str) or system not in SYSTEMS:
        _bad(source, f"{at}.system", f"must be one of {', '.join(sorted(SYSTEMS))}, not {system!r}")
    return Machine(
        name=name,
        system=system,
        vcpus=_int(source, f"{at}.vcpus", entry["vcpus"], MAX_VCPUS),
        memory_mib=_int(source, f"{at}.memory_mib", entry["memory_mib"], MAX_MEMORY_MIB, low=64),
        var_size_gib=_int(source, f"{at}.var_size_gib", entry["var_size_gib"], MAX_VAR_SIZE_GIB),
        network=_network(source, f"{at}.network", entry["network"]),
        mac=_mac(source, f"{at}.mac", entry["mac"]),
        libvirt_uri=_uri(source, f"{at}.libvirt_uri", entry["libvirt_uri"]),
        image_attr=_image_attr(source, f"{at}.image_attr", entry["image_attr"]),
        health_check=_health_check(source, f"{at}.health_check", entry.get("health_check", [])),
    )


def _health_check(source: str, at: str, value: Any) -> tuple[str, ...]:
    """Optional (older machines.json files lack it): an argv, not a shell line."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v and len(v) <= 4096 for v in value):
        _bad(source, at, "must be a list of non-empty strings (a command and its arguments)")
    if len(value) > 64 or (value and not value[0].startswith("/")):
        _bad(source, at, "must name the command by its absolute path in the guest, with at most 63 arguments")
    return tuple(value)


def _int(source: str, at: str, value: Any, high: int, low: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        _bad(source, at, f"must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        _bad(source, at, f"must be between {low} and {high}, not {value}")
    return value


def _network(source: str, at: str, value: Any) -> Network:
    if not isinstance(value, dict):
        _bad(source, at, 'must be an object like {"type": "network", "name": "default"}')
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in {t.value for t in NetworkType}:
        _bad(source, f"{at}.type", f"must be network, bridge or none, not {kind!r}")
    if kind == NetworkType.NONE:
        _no_extra(source, at, value, {"type"})
        return Network(NetworkType.NONE)
    _no_extra(source, at, value, {"type", "name"})
    name = value.get("name")
    if not isinstance(name, str) or not BRIDGE_RE.fullmatch(name):
        _bad(source, f"{at}.name", f"must name a libvirt {kind} (letters, digits, _.:-), not {name!r}")
    return Network(NetworkType(kind), name)


def _mac(source: str, at: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not MAC_RE.fullmatch(value.lower()):
        _bad(source, at, f"must be null or a MAC address like 52:54:00:12:34:56, not {value!r}")
    if int(value[:2], 16) & 1:
        _bad(source, at, f"{value} is a multicast address; use a unicast one such as 52:54:00:…")
    return value.lower()


def _uri(source: str, at: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        _bad(source, at, f"must be null or a libvirt URI like qemu+ssh://host/system, not {value!r}")
    try:
        parse_uri(value)
    except UnsafeUriError as e:
        _bad(source, at, f"must be null or a libvirt URI ivm accepts ({e}), not {value!r}")
    return value


def _image_attr(source: str, at: str, value: Any) -> str:
    # A Nix attribute name without quotes or dots: `.#a.b` would select b inside a.
    if not isinstance(value, str) or not IMAGE_ATTR_RE.fullmatch(value):
        _bad(source, at, f"must be a flake package name like image-web1, not {value!r}")
    return value


def _no_extra(source: str, at: str, obj: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        where = f"{at}.{extra[0]}" if at else extra[0]
        _bad(source, where, "is not a known field (typo, or a file from a newer ivm?)")


def _bad(source: str, at: str, problem: str) -> NoReturn:
    where = f"{source}: {at}" if at else source
    raise UsageError(
        f"{where} {problem}",
        "fix it in the file if you wrote it, else in machines/<name>/meta.nix and rebuild machines.json",
    )


def get_machine(machines: Mapping[str, Machine], name: str) -> Machine:
    """Look a machine up by name, listing the known ones when it is absent."""
    try:
        return machines[name]
    except KeyError:
        known = ", ".join(sorted(machines)) or "none"
        raise UsageError(
            f"unknown machine {name!r} (known: {known})",
            f"check the spelling, or add {name} to machines.json "
            f"(with Nix: machines/{name}/meta.nix and default.nix)",
        ) from None
