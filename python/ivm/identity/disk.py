"""The identity disk: a small raw ext4 image (label `identity`) made with `mkfs.ext4 -d`.

No root, no loop devices, no guestfish: the files are staged in a private temporary directory and
mkfs copies them in with their modes. The guest trusts neither owners nor modes on this disk (it
copies known names with fixed modes), but files are made root-owned anyway so the disk reads sanely.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ivm.errors import ToolError
from ivm.identity.rules import RULE
from ivm.identity.source import Identity
from ivm.run import run

LABEL = "identity"
SIZE = "4M"  # ten files of at most 64 KiB each, plus ext4 metadata
E2FSPROGS = "e2fsprogs (mkfs.ext4, debugfs)"


def build_identity_disk(identity: Identity, output: Path) -> Path:
    """Write the identity image to `output` (mode 0600: it holds the private host key).

    The image is made inside a private temporary directory (mkfs and debugfs open it by name), then
    copied to a new file beside `output` and renamed over it: nothing planted at `output`, such as
    a symlink, is ever followed or written through.
    """
    with tempfile.TemporaryDirectory(prefix="ivm-identity-") as tmp:
        staging = Path(tmp) / "root"
        staging.mkdir(mode=0o755)
        for name, data in identity.files.items():
            path = staging / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, RULE[name].mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            path.chmod(RULE[name].mode)  # the umask must not narrow the documented modes
        staging.chmod(0o755)
        image = Path(tmp) / "identity.img"
        fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                LABEL,
                "-O",
                "^has_journal",
                "-E",
                "root_owner=0:0",
                "-U",
                fs_uuid(identity.digest),
                "-d",
                str(staging),
                str(image),
                SIZE,
            ],
            package=E2FSPROGS,
            what="making the identity filesystem",
        )
        if os.geteuid() != 0:
            _make_root_owned(image, [str(name) for name in identity.files])
        _publish(image, output)
    return output


def _publish(image: Path, output: Path) -> None:
    """Copy `image` to a new 0600 file beside `output`, then rename it over `output`."""
    try:
        fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.")
    except OSError as e:
        raise ToolError(f"cannot write into {output.parent}: {e.strerror}", "pick another OUTPUT") from None
    try:
        with os.fdopen(fd, "wb") as dst, image.open("rb") as src:
            _copy_keeping_holes(src.fileno(), dst.fileno())
            os.fsync(dst.fileno())
        try:
            Path(tmp).replace(output)  # replaces a file or symlink at output; follows neither
        except OSError as e:
            raise ToolError(f"cannot write {output}: {e.strerror}", "pick another OUTPUT") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy_keeping_holes(src: int, dst: int) -> None:
    """Copy only the data extents (mkfs leaves most of the 4 MiB a hole): a dense copy would make
    every VM's identity volume take 4 MiB instead of ~70 KiB."""
    size = os.fstat(src).st_size
    pos = 0
    while pos < size:
        try:
            data = os.lseek(src, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole remains
            break
        hole = os.lseek(src, data, os.SEEK_HOLE)
        while data < hole:
            chunk = os.pread(src, min(1 << 20, hole - data), data)
            if not chunk:
                raise ToolError("the identity image shrank while it was being copied")
            data += os.pwrite(dst, chunk, data)
        pos = hole
    os.ftruncate(dst, size)


def _make_root_owned(image: Path, names: list[str]) -> None:
    # mkfs -d copies the owner of each staged file; a non-root user's files are re-owned in place.
    script = "".join(f"sif /{n} uid 0\nsif /{n} gid 0\n" for n in names)
    run(
        ["debugfs", "-w", "-f", "-", str(image)],
        package=E2FSPROGS,
        input=script.encode(),
        what="setting owners on the identity filesystem",
    )


def fs_uuid(digest: str) -> str:
    """The filesystem UUID records which identity the disk holds (read back from its superblock)."""
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


SUPERBLOCK_UUID_AT = 1024 + 0x68  # s_uuid in the ext4 superblock


def digest_in_superblock(head: bytes) -> str | None:
    """The identity digest of a disk made by build_identity_disk, from its first 4 KiB."""
    raw = head[SUPERBLOCK_UUID_AT : SUPERBLOCK_UUID_AT + 16]
    return raw.hex() if len(raw) == 16 else None
