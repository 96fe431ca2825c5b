"""The header-last completeness protocol, as bytes: a volume is complete only with its magic where
its kind keeps it, and an identity disk's digest is read only from a complete one."""

from __future__ import annotations

from ivm.disks import EXT4_MAGIC_AT, HEADER, Header, has_header, identity_digest, qcow2_virtual_size
from ivm.identity.disk import SUPERBLOCK_UUID_AT


def _ext4(digest: bytes, magic: bytes = b"\x53\xef") -> bytes:
    head = bytearray(HEADER)
    head[EXT4_MAGIC_AT : EXT4_MAGIC_AT + 2] = magic
    head[SUPERBLOCK_UUID_AT : SUPERBLOCK_UUID_AT + 16] = digest
    return bytes(head)


def test_each_kind_is_told_by_its_own_magic() -> None:
    qcow2 = b"QFI\xfb" + bytes(HEADER - 4)
    assert has_header(qcow2, Header.QCOW2) and not has_header(qcow2, Header.EXT4)
    ext4 = _ext4(bytes(16))
    assert has_header(ext4, Header.EXT4) and not has_header(ext4, Header.QCOW2)
    assert not has_header(bytes(HEADER), Header.QCOW2) and not has_header(b"", Header.EXT4)


def test_an_incomplete_identity_disk_has_no_digest() -> None:
    digest = bytes(range(16))
    assert identity_digest(_ext4(digest)) == digest.hex()
    assert identity_digest(_ext4(digest, magic=b"\0\0")) is None  # everything but the header landed


def test_the_overlay_size_comes_from_the_base_header() -> None:
    head = b"QFI\xfb" + bytes(20) + (20 * 1024**3).to_bytes(8, "big")
    assert qcow2_virtual_size(head) == 20 * 1024**3
