"""tests/golden/guest/ holds what NixOS evaluates for the guest's boot; fail when they drift apart.

Other layers read these files (the build-time check rehearsals, a stand-in guest), so a change to
modules/ or to nixpkgs must regenerate them: `scripts/update-guest-golden`.
"""

from __future__ import annotations

import difflib

import pytest

from tests.nix.guest_golden import GOLDEN_DIR, REGENERATE, GoldenError, evaluate, on_disk

pytestmark = pytest.mark.nix


@pytest.fixture(scope="module")
def evaluated() -> dict[str, str]:
    try:
        return evaluate()
    except GoldenError as err:
        if "not installed" in str(err) or "no nixpkgs tree" in str(err):
            pytest.skip(str(err))
        pytest.fail(str(err))


def test_every_golden_file_is_evaluated(evaluated: dict[str, str]) -> None:
    assert set(on_disk()) == set(evaluated), f"regenerate them: {REGENERATE}"


def test_golden_files_match_the_evaluation(evaluated: dict[str, str]) -> None:
    golden = on_disk()
    diffs = [
        "".join(
            difflib.unified_diff(
                golden.get(name, "").splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"golden/{name}",
                f"evaluated/{name}",
            )
        )
        for name, text in evaluated.items()
        if golden.get(name) != text
    ]
    assert not diffs, f"{GOLDEN_DIR} is stale; regenerate it: {REGENERATE}\n" + "\n".join(diffs)


def test_the_ivm_units_name_var_as_the_design_says(evaluated: dict[str, str]) -> None:
    # A guard on the extraction itself: an empty or wrong attribute would still "match" its golden.
    assert "RequiresMountsFor=/sysroot/var" in evaluated["initrd/ivm-identity.service"]
    assert "/var/home /home none" in evaluated["initrd/fstab"]
    assert "HostKey /var/identity/ssh_host_ed25519_key" in evaluated["sshd_config"]
    assert "Storage=persistent" in evaluated["journald.conf"]
    assert "table inet nixos-fw {" in evaluated["nftables.nft"]
