"""The base image on the local machine: build it with Nix or take a path, inspect, name, convert.

A base is named by content: the Nix store hash when the image is a store path (machines whose
configuration is the same share one), else a hash of the file's data (sparse-aware, so a large
mostly empty raw image is hashed in the time it takes to read its data).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import struct
from dataclasses import dataclass
from pathlib import Path

from ivm.errors import ToolError, UsageError
from ivm.privilege import Account
from ivm.run import run

log = logging.getLogger("ivm.image")
STORE_RE = re.compile(r"/nix/store/([0-9a-df-np-sv-z]{32})-[^/]+")
IMAGE_SUFFIXES = (".qcow2", ".raw", ".img")
QCOW2_MAGIC = b"QFI\xfb"
QEMU_UTILS = "qemu-utils (qemu-img)"
BLOCK = 1024 * 1024
ZERO_BLOCK = bytes(BLOCK)
QCOW2_INCOMPAT_DATA_FILE = 1 << 2  # incompatible feature bit: clusters live in an external data file
QCOW2_AUTOCLEAR_RAW_DATA = 1 << 1  # autoclear bit: the external data file is a raw image
QCOW2_EXT_DATA_FILE = 0x44415441  # header extension "DATA": the external data file's name
QCOW2_EXT_BACKING_FORMAT = 0xE2792ACA
QCOW2_MAX_CLUSTER = 2 * 1024 * 1024


@dataclass(frozen=True)
class BaseImage:
    path: Path  # the file as given or built
    format: str  # "qcow2" or "raw"
    hash: str  # 32 characters, names the base volume

    @property
    def short(self) -> str:
        return self.hash[:12]


def nix_build(flake: str, attr: str, nix: str, as_user: Account | None = None) -> Path:
    """`nix build --no-link --print-out-paths FLAKE#ATTR` with the user's NIX command."""
    argv = [*shlex.split(nix), "build", "--no-link", "--print-out-paths", f"{flake}#{attr}"]
    log.info("building %s#%s with nix", flake, attr)
    try:
        out = run(
            argv,
            package="Nix (https://nixos.org/download), or pass --image PATH",
            what=f"nix build {flake}#{attr}",
            as_user=as_user,
        )
    except ToolError as e:
        raise ToolError(e.message, e.hint or "see the nix output with --debug") from None
    paths = [line for line in out.splitlines() if line.strip()]
    if not paths:
        raise ToolError(f"nix build {flake}#{attr} printed no output path")
    return Path(paths[0])


def nix_out_path(flake: str, attr: str, nix: str, as_user: Account | None = None) -> Path:
    """The store path FLAKE#ATTR would build to, by evaluation only (no build)."""
    argv = [*shlex.split(nix), "eval", "--raw", f"{flake}#{attr}.outPath"]
    return Path(run(argv, package="Nix", what=f"nix eval {flake}#{attr}", as_user=as_user).strip())


def image_file(out: Path) -> Path:
    """The disk image inside a build output: the path itself, or the one image in a directory."""
    if out.is_dir():
        found = sorted(p for p in out.iterdir() if p.suffix in IMAGE_SUFFIXES and p.is_file())
        if len(found) != 1:
            raise UsageError(
                f"{out} holds {len(found)} disk images (*.qcow2, *.raw, *.img); expected one",
                "pass the image file itself with --image",
            )
        return found[0]
    if not out.exists():
        raise UsageError(f"image {out} does not exist", "check the path given to --image")
    return out


def inspect(path: Path) -> BaseImage:
    """Check that `path` is a self-contained qcow2 or a raw disk with a partition table.

    A qcow2 header is read here before qemu-img sees the file: qemu-img opens an external data
    file while inspecting, and a base must never make QEMU read another file (say, another VM's
    identity image) through such a reference.
    """
    if not path.is_file():
        raise UsageError(f"image {path} is not a file", "pass a disk image file to --image")
    _refuse_external(path, _local_head(path))
    try:
        info = json.loads(
            run(
                # absolute, so a name like "json:{...}" or "nbd:host:1" is a file, not a protocol
                ["qemu-img", "info", "--output=json", str(path.absolute())],
                package=QEMU_UTILS,
                what=f"inspecting {path}",
            )
        )
    except json.JSONDecodeError:
        raise ToolError(f"qemu-img printed unreadable information about {path}") from None
    fmt = info.get("format")
    if fmt not in ("qcow2", "raw"):
        raise UsageError(
            f"image {path} is in {fmt} format; ivm imports qcow2 or raw",
            f"convert it: qemu-img convert -O qcow2 {path} image.qcow2",
        )
    specific = (info.get("format-specific") or {}).get("data") or {}
    if info.get("backing-filename") or info.get("full-backing-filename"):
        _refuse_external(path, "a backing file")
    if specific.get("data-file") or specific.get("data-file-raw"):
        _refuse_external(path, "an external data file")
    if fmt == "raw" and not _has_partition_table(path):
        raise UsageError(
            f"{path} is not a disk image (no partition table found)",
            "pass the image built by `nix build .#image-NAME`",
        )
    return BaseImage(path, fmt, store_hash(path) or content_hash(path))


def external_reference(head: bytes) -> str | None:
    """What a qcow2 header makes QEMU open besides the image itself (a backing file, an external
    data file), or None for a self-contained image or a file that is not qcow2. Pure."""
    if head[:4] != QCOW2_MAGIC:
        return None
    try:
        return _header_reference(head) or _extension_reference(head)
    except struct.error:  # a field or extension past the bytes read
        return "an unreadable qcow2 header"


def _header_reference(head: bytes) -> str | None:
    version, backing_offset, backing_size = struct.unpack_from(">IQI", head, 4)
    if backing_offset or backing_size:
        return "a backing file"
    if version >= 3:
        incompatible, _compatible, autoclear = struct.unpack_from(">QQQ", head, 72)
        if incompatible & QCOW2_INCOMPAT_DATA_FILE or autoclear & QCOW2_AUTOCLEAR_RAW_DATA:
            return "an external data file"
    return None


def _extension_reference(head: bytes) -> str | None:
    """Scan the header extensions (each padded to 8 bytes) up to their end marker."""
    named = {QCOW2_EXT_DATA_FILE: "an external data file", QCOW2_EXT_BACKING_FORMAT: "a backing file"}
    version = struct.unpack_from(">I", head, 4)[0]
    offset = struct.unpack_from(">I", head, 100)[0] if version >= 3 else 72
    while True:
        kind, length = struct.unpack_from(">II", head, offset)
        if kind == 0 or kind in named:
            return named.get(kind)
        offset += 8 + (length + 7) // 8 * 8


def _local_head(path: Path) -> bytes:
    """The first cluster of a qcow2 file (where its header and extensions live), else 4 KiB."""
    with path.open("rb") as f:
        head = f.read(4096)
        if head[:4] == QCOW2_MAGIC and len(head) >= 24:
            cluster = 1 << min(struct.unpack(">I", head[20:24])[0], 21)
            head += f.read(min(cluster, QCOW2_MAX_CLUSTER) - len(head))
    return head


def _refuse_external(path: Path, head_or_reason: bytes | str) -> None:
    reason = head_or_reason if isinstance(head_or_reason, str) else external_reference(head_or_reason)
    if reason is None:
        return
    raise UsageError(
        f"image {path} refers to {reason}; a base image must be self-contained",
        f"flatten it into one file: qemu-img convert -O qcow2 {path} image.qcow2",
    )


def store_hash(path: Path) -> str | None:
    match = STORE_RE.match(str(path.resolve()))
    return match.group(1) if match else None


def content_hash(path: Path) -> str:
    """A hash of the file's content that costs nothing for its holes and all-zero blocks."""
    h = hashlib.blake2b(digest_size=16)
    size = path.stat().st_size
    h.update(f"ivm-base-v1 {size}\n".encode())
    with path.open("rb") as f:
        fd = f.fileno()
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
                hole = os.lseek(fd, data, os.SEEK_HOLE)
            except OSError:
                break  # only a hole remains
            pos = data - data % BLOCK
            while pos < hole:
                block = os.pread(fd, BLOCK, pos)
                if not block:
                    break
                if block != ZERO_BLOCK[: len(block)]:
                    h.update(pos.to_bytes(8, "little"))
                    h.update(block)
                pos += len(block)
    return h.hexdigest()


def _has_partition_table(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(1024)
    return len(head) >= 512 and head[510:512] == b"\x55\xaa"


def as_qcow2(image: BaseImage, workdir: Path) -> Path:
    """The image as a qcow2 file: itself, or a conversion written into `workdir`."""
    if image.format == "qcow2":
        return image.path
    target = workdir / "base.qcow2"
    log.info("converting %s to qcow2", image.path.name)
    run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(image.path.absolute()), str(target)],
        package=QEMU_UTILS,
        what=f"converting {image.path} to qcow2",
    )
    return target
