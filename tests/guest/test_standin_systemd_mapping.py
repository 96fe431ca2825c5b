"""The systemd stand-in installs the golden guest texts unchanged, apart from the listed mapping."""

from __future__ import annotations

import pytest

from tests.lab.standin_systemd.golden import load
from tests.lab.standin_systemd.mapping import (
    MAPPINGS,
    importer_path,
    initrd_files,
    initrd_fstab,
    kernel_params,
    read_import_script,
    root_store_files,
    unmapped_store_paths,
)

GOLDEN = load()


@pytest.mark.parametrize("systemd", [252, 257])
def test_units_and_importer_are_installed_unchanged(systemd: int) -> None:
    files = initrd_files(GOLDEN, read_import_script(), systemd)
    for name, text in GOLDEN.units.items():
        assert files[f"/etc/systemd/system/{name}"] == text
    importer = files[importer_path(GOLDEN)]
    assert importer.startswith("#!/bin/bash\n") and importer.endswith(read_import_script())


def test_fstab_changes_only_bind_sources_and_only_before_254() -> None:
    assert initrd_fstab(GOLDEN, 254) == GOLDEN.fstab
    old, new = GOLDEN.fstab.splitlines(), initrd_fstab(GOLDEN, 252).splitlines()
    changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    assert changed, "the golden fstab has bind mounts"
    for a, b in changed:
        assert "bind" in a.split()[3].split(",") and b == f"/sysroot{a}"


def test_kernel_params_drop_only_root_fstab_before_253() -> None:
    params = GOLDEN.boot["kernel_params"]
    assert kernel_params(GOLDEN, 257) == params
    assert kernel_params(GOLDEN, 252) == [p for p in params if p != "root=fstab"]


def test_every_store_path_the_units_use_exists_in_the_standin() -> None:
    initrd = set(initrd_files(GOLDEN, read_import_script(), 252))
    root = set(root_store_files(GOLDEN))
    assert unmapped_store_paths(GOLDEN, initrd, root) == []
    assert unmapped_store_paths(GOLDEN, set(), set()) != []  # the check can fail


def test_mapping_is_listed() -> None:
    assert all(m.what and m.standin and m.why for m in MAPPINGS)
