"""Base images that refer to other files (backing file, external data file) are refused before
qemu-img or QEMU opens anything through them; names that look like qemu protocols stay files."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from ivm.errors import UsageError
from ivm.image import external_reference, inspect


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def head(path: Path) -> bytes:
    return path.read_bytes()[:65536]


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "web2-identity.img"
    path.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY----- of web2\n" * 50)
    return path


def test_self_contained_images_pass(tmp_path: Path) -> None:
    v3, v2 = tmp_path / "v3.qcow2", tmp_path / "v2.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(v3), "16M")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "compat=0.10", str(v2), "16M")
    assert external_reference(head(v3)) is None and external_reference(head(v2)) is None
    assert external_reference(b"\0" * 4096) is None  # not qcow2: raw images refer to nothing
    assert inspect(v3).format == "qcow2"


@pytest.mark.parametrize(
    "options",
    ["data_file={victim}", "data_file={victim},data_file_raw=on"],
    ids=["data-file", "data-file-raw"],
)
def test_external_data_file_is_refused_before_qemu_img_opens_it(
    tmp_path: Path, victim: Path, options: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "evil.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", options.format(victim=victim), str(image), "16M")
    assert external_reference(head(image)) == "an external data file"
    opened: list[str] = []

    def record(argv: list[str], **_: object) -> str:
        opened.append(argv[0])
        return "{}"

    monkeypatch.setattr("ivm.image.run", record)
    with pytest.raises(UsageError, match="refers to an external data file"):
        inspect(image)
    assert opened == []  # refused from the header alone: qemu-img never ran


def test_data_file_extension_alone_is_refused(tmp_path: Path, victim: Path) -> None:
    """The feature bit cleared by hand: the DATA header extension still names a file."""
    image = tmp_path / "evil.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={victim}", str(image), "16M")
    data = bytearray(image.read_bytes())
    data[72:80] = struct.pack(">Q", 0)
    image.write_bytes(bytes(data))
    assert external_reference(bytes(data[:65536])) == "an external data file"


def test_backing_file_is_refused(tmp_path: Path, victim: Path) -> None:
    image = tmp_path / "backed.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(victim), str(image), "16M")
    assert external_reference(head(image)) == "a backing file"
    with pytest.raises(UsageError, match="refers to a backing file"):
        inspect(image)


def test_truncated_header_is_refused() -> None:
    image = bytearray(4096)
    image[:4] = b"QFI\xfb"
    image[4:8] = struct.pack(">I", 3)
    image[100:104] = struct.pack(">I", 4090)  # extensions run past the bytes read
    assert external_reference(bytes(image[:80])) == "an unreadable qcow2 header"
    assert external_reference(bytes(image)) == "an unreadable qcow2 header"


def test_a_name_like_a_qemu_protocol_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--image nbd:localhost:10809.qcow2` is that file, not a connection to an NBD server."""
    folder = tmp_path / "images"
    folder.mkdir()
    qemu_img("create", "-q", "-f", "qcow2", str(folder / "nbd:localhost:10809.qcow2"), "16M")
    monkeypatch.chdir(folder)
    assert inspect(Path("nbd:localhost:10809.qcow2")).format == "qcow2"
