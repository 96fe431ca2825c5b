"""Unit tests keep ivm's runtime directory (locks, known_hosts) in their own tmp_path, never in
/run/ivm or the user's runtime directory."""

from __future__ import annotations

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
