"""Unit tests keep ivm's runtime directory (locks, known_hosts) in their own tmp_path, never in
/run/ivm or the user's runtime directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def private_runtime_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    base = tmp_path_factory.mktemp("runtime")
    for d in ("run", "tmp", "xdg"):
        (base / d).mkdir(mode=0o700)
    monkeypatch.setattr("ivm.runtime_dir.RUN_ROOT", base / "run")
    monkeypatch.setattr("ivm.runtime_dir.TMP_ROOT", base / "tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base / "xdg"))
    return base


@pytest.fixture
def raw_image(tmp_path: Path) -> Path:
    """An 8 MiB raw disk with a GPT: the smallest image `--image` accepts."""
    img = tmp_path / "disk.raw"
    with img.open("wb") as f:
        f.truncate(8 * 1024 * 1024)
    subprocess.run(
        ["sfdisk", "-q", str(img)],
        input=b"label: gpt\n,,U\n",
        check=True,
        # Debian keeps sfdisk in /usr/sbin, off a user's PATH; the Nix build has it on PATH only.
        env={"PATH": os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])},
    )
    return img
