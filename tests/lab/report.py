"""Parse the stand-in guest's `IVM-REPORT` console lines into one immutable report."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PREFIX = "IVM-REPORT "


@dataclass(frozen=True)
class Disk:
    name: str  # vda, vdb, ...
    serial: str | None
    readonly: bool
    size: int  # bytes


@dataclass(frozen=True)
class IdentityFile:
    name: str
    mode: int  # permission bits, e.g. 0o600
    uid: int
    gid: int
    size: int


@dataclass(frozen=True)
class Report:
    """What one boot of the stand-in guest saw."""

    efi: bool
    marker: str
    disks: tuple[Disk, ...]
    boot_write: str  # "denied", "allowed" or "unknown"
    boot_disk: str | None
    var_formatted: bool | None
    var_counter: int | None
    identity_files: Mapping[str, IdentityFile]
    identity_lines: Mapping[str, tuple[str, ...]]
    missing: frozenset[str]  # serials of expected disks the guest did not find
    errors: tuple[str, ...]
    done: bool

    def disk(self, serial: str | None) -> Disk:
        """The disk with this serial (None: the first disk without one, i.e. the boot disk)."""
        for disk in self.disks:
            if disk.serial == serial:
                return disk
        raise KeyError(f"guest saw no disk with serial {serial}: {self.disks}")


def report_lines(lines: Iterable[str]) -> list[str]:
    """The report part of each console line; a kernel message may precede it on the same line."""
    return [line[line.index(PREFIX) + len(PREFIX) :].rstrip("\r\n") for line in lines if PREFIX in line]


def parse_report(lines: Iterable[str]) -> Report:
    efi, marker, boot_write, boot_disk = False, "", "unknown", None
    formatted: bool | None = None
    counter: int | None = None
    disks: list[Disk] = []
    files: dict[str, IdentityFile] = {}
    texts: dict[str, list[str]] = {}
    missing: set[str] = set()
    errors: list[str] = []
    done = False
    for line in report_lines(lines):
        text_line = re.fullmatch(r"identity-line file=(\S+) text=(.*)", line)
        if text_line:
            texts.setdefault(text_line[1], []).append(text_line[2])
            continue
        words = line.split()
        kind = words[0] if words and "=" not in words[0] else ""
        f = dict(w.split("=", 1) for w in words if "=" in w)
        if kind == "done":
            done = True
        elif kind == "disk":
            serial = None if f["serial"] == "-" else f["serial"]
            disks.append(Disk(f["name"], serial, f["ro"] == "1", int(f["size"])))
        elif kind == "var":
            formatted = f["formatted"] == "yes" if "formatted" in f else formatted
            counter = int(f["counter"]) if "counter" in f else counter
        elif kind == "identity":
            mode, uid, gid, size = (int(f["mode"], 8), int(f["uid"]), int(f["gid"]), int(f["size"]))
            files[f["file"]] = IdentityFile(f["file"], mode, uid, gid, size)
        elif kind == "disk-missing":
            missing.add(f["serial"])
        elif kind == "error":
            errors.append(line)
        else:
            efi = f.get("efi", "1" if efi else "0") == "1"
            marker = f.get("marker", marker)
            boot_write = f.get("boot-write", boot_write)
            boot_disk = f.get("disk", boot_disk) if "boot-write" in f else boot_disk
    return Report(
        efi=efi,
        marker=marker,
        disks=tuple(disks),
        boot_write=boot_write,
        boot_disk=None if boot_disk == "-" else boot_disk,
        var_formatted=formatted,
        var_counter=counter,
        identity_files=files,
        identity_lines={k: tuple(v) for k, v in texts.items()},
        missing=frozenset(missing),
        errors=tuple(errors),
        done=done,
    )
