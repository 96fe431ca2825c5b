"""The stand-in's whole departure from the guest's evaluated boot logic, as data.

The golden units, fstab and settings are installed as NixOS evaluates them. What a Debian system
cannot provide by the same path is listed here, one entry each, and applied mechanically; the
unit tests check that nothing else in the golden texts changes and that every store path the units
name exists in the stand-in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .golden import REPO, GuestGolden

IMPORT_SCRIPT = REPO / "modules" / "identity-import.sh"
STORE_PATH = re.compile(r"/nix/store/[0-9a-z]{32}-[^/\s\"']+")


@dataclass(frozen=True)
class Mapping:
    what: str  # what NixOS has
    standin: str  # what the stand-in has instead
    why: str


MAPPINGS = (
    Mapping(
        "the importer's interpreter, writeShellApplication's runtimeShell (/nix/store/…-bash/bin/bash)",
        "/bin/bash, then the same `set -o nounset` and `set -o pipefail` lines and the script unchanged",
        "Debian's bash; the importer itself lies at the unit's store path in the initrd",
    ),
    Mapping(
        "coreutils mv with --exchange (coreutils >= 9.5)",
        "on coreutils < 9.5 (Debian 12), /usr/bin/mv in the initrd is a renameat2(RENAME_EXCHANGE) shim "
        "that runs coreutils' mv for every other call",
        "the import swaps /var/identity in one rename; Debian 13's coreutils has --exchange itself",
    ),
    Mapping(
        "the base hosts file at /nix/store/…-hosts (initrd, or root when named under /sysroot)",
        "a file at that store path holding NixOS's default localhost lines",
        "the stand-in holds the two store files the unit reads, by their evaluated paths",
    ),
    Mapping(
        "the default resolv.conf at /nix/store/…-resolv.conf (initrd, or root when under /sysroot)",
        "a file at that store path with ivm.identity.defaultResolvConf",
        "same",
    ),
    Mapping(
        "`root=fstab` on the kernel command line",
        "left out when the stand-in's systemd is older than 253; the fstab's / entry mounts /sysroot",
        "systemd 252 takes `fstab` for a device name and makes a second sysroot.mount (systemd PR 26038)",
    ),
    Mapping(
        "bind sources in the initrd fstab, which systemd >= 254 resolves under /sysroot",
        "prefixed with /sysroot in the installed fstab when the stand-in's systemd is older than 254",
        "systemd 252 mounts the bind source from the initrd's own tree (systemd PR 28385)",
    ),
    Mapping(
        "systemd's default start and device timeouts (90 s)",
        "DefaultTimeoutStartSec= and DefaultDeviceTimeoutSec= of 600 s in the initrd's system.conf.d",
        "an emulated (TCG) boot on a loaded 2-core machine finds its disks after more than 90 s",
    ),
    Mapping(
        "the guest agent's unit: qemu-ga --allow-rpcs (nixos/modules/virtualisation/qemu-guest-agent.nix)",
        "Debian's qemu-guest-agent unit with the golden unit's Condition…= lines as a drop-in",
        "Debian 12's qemu-ga (QEMU 7.2) has no --allow-rpcs; the condition is what gates the health signal",
    ),
    Mapping(
        "LOCALE_ARCHIVE and TZDIR store paths in the units' Environment=",
        "kept as they are, naming paths absent in the stand-in",
        "the importer sets LC_ALL=C and reads no time zone",
    ),
    Mapping(
        "the initrd fstab (SYSTEMD_SYSROOT_FSTAB) at /nix/store/…-initrd-fstab",
        "the same text at the same path in the initrd; ManagerEnvironment= set as NixOS sets it",
        "systemd's fstab generator reads it in place of /sysroot/etc/fstab",
    ),
)

# NixOS's hosts file for a guest with no networking.hosts of its own (nixos/modules/config/networking.nix).
BASE_HOSTS = "127.0.0.1 localhost\n::1 localhost\n"


def kernel_params(golden: GuestGolden, systemd_major: int) -> list[str]:
    """The guest's kernel command line for a stand-in running this systemd."""
    params = list(golden.boot["kernel_params"])
    return [p for p in params if not (p == "root=fstab" and systemd_major < 253)]


def initrd_fstab(golden: GuestGolden, systemd_major: int) -> str:
    """The guest's initrd fstab as a stand-in running this systemd must be given it."""
    if systemd_major >= 254:
        return golden.fstab
    lines = []
    for line in golden.fstab.splitlines():
        fields = line.split()
        is_bind = len(fields) >= 4 and "bind" in fields[3].split(",")
        lines.append(line.replace(fields[0], f"/sysroot{fields[0]}", 1) if is_bind else line)
    return "\n".join(lines) + "\n"


def install_links(golden: GuestGolden, unit: str) -> list[str]:
    """The .wants/.requires directories NixOS links a unit into (its wantedBy / requiredBy)."""
    install = golden.boot["install"][unit]
    return [f"{t}.wants" for t in install["wantedBy"]] + [f"{t}.requires" for t in install["requiredBy"]]


def importer_path(golden: GuestGolden) -> str:
    """The store path of the importer as the ivm-identity unit runs it."""
    unit = golden.units["ivm-identity.service"]
    found = re.search(r"^ExecStart=(\S+)", unit, re.MULTILINE)
    if found is None or not found.group(1).startswith("/nix/store/"):
        raise ValueError("ivm-identity.service has no ExecStart= in /nix/store")
    return found.group(1)


def importer_text(import_script: str) -> str:
    """The importer as writeShellApplication writes it, with Debian's bash as interpreter."""
    return f"#!/bin/bash\nset -o nounset\nset -o pipefail\n\n{import_script}"


def _store_file(path: str, golden: GuestGolden) -> str | None:
    if path.endswith("-hosts"):
        return BASE_HOSTS
    if path.endswith("-resolv.conf"):
        return golden.default_resolv_conf
    return None


def store_files(golden: GuestGolden, in_root: bool) -> dict[str, str]:
    """Store files the identity unit reads, path -> content: those it names under /sysroot live in
    the root (`in_root`), the others in the initrd."""
    unit = golden.units["ivm-identity.service"]
    files: dict[str, str] = {}
    for line in unit.splitlines():
        for path in STORE_PATH.findall(line):
            content = _store_file(path, golden)
            if content is not None and (f"/sysroot{path}" in line) == in_root:
                files[path] = content
    return files


def root_store_files(golden: GuestGolden) -> dict[str, str]:
    return store_files(golden, in_root=True)


def initrd_files(golden: GuestGolden, import_script: str, systemd_major: int) -> dict[str, str]:
    """Files the initrd gets besides Debian's: path -> content (units, fstab, importer, settings)."""
    env = " ".join(f'"{k}={v}"' for k, v in sorted(golden.boot["manager_environment"].items()))
    files = {f"/etc/systemd/system/{name}": text for name, text in golden.units.items()}
    files[golden.fstab_path] = initrd_fstab(golden, systemd_major)
    files[importer_path(golden)] = importer_text(import_script)
    files.update(store_files(golden, in_root=False))
    files["/etc/systemd/system.conf.d/ivm.conf"] = (
        f"[Manager]\nManagerEnvironment={env}\nDefaultTimeoutStartSec=600s\nDefaultDeviceTimeoutSec=600s\n"
    )
    return files


def unmapped_store_paths(golden: GuestGolden, initrd: set[str], root: set[str]) -> list[str]:
    """Store paths the units or fstab run or read that the stand-in lacks (apart from the kept
    Environment= lines): empty when the image is complete."""
    missing = []
    for text in [*golden.units.values(), golden.fstab]:
        for line in text.splitlines():
            if line.startswith("Environment="):
                continue
            for path in STORE_PATH.findall(line):
                if path.startswith("/nix/store") and f"/sysroot{path}" in line:
                    if path not in root:
                        missing.append(path)
                elif not any(
                    p == path or path.startswith(p + "/") or p.startswith(path + "/") for p in initrd
                ):
                    missing.append(path)
    return missing


def read_import_script(path: Path = IMPORT_SCRIPT) -> str:
    return path.read_text()
