"""No private key material anywhere it should not be: the git-tracked tree, machines.json (as the
tests write it and as Nix evaluates it), domain XML and the tool's --debug log; identity files
and images are private on the host; .gitignore keeps generated keys out of git and the store.

The daemon-backed half (a full `create` + `define` with --debug, modes of pool volumes) is in
tests/integration/test_secrets.py: the package's check phase runs this file without a daemon.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from ivm.identity.disk import build_identity_disk
from ivm.identity.source import generate_missing, load_identity
from ivm.identity.sshkey import MAGIC
from ivm.machines import parse_machines
from tests.conftest import Project, RunCli

REPO = Path(__file__).resolve().parents[2]
# Every OpenSSH private key body starts with base64("openssh-key-v1\0"); built here, not written out,
# so this file does not match its own search.
OPENSSH_BODY = base64.b64encode(MAGIC).decode()[:20]
BEGIN_MARKER = "-----BEGIN " + "OPENSSH PRIVATE KEY-----"
PEM_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\s*[A-Za-z0-9+/=\s]{40,}-----END")


def key_secrets(key: Path) -> list[str]:
    """Substrings that only a leak of this private key would produce: its base64 body, whole and by
    line (minus the first line, which is the same openssh-key-v1 header in every key)."""
    lines = [line.strip() for line in key.read_text().splitlines() if line and "-----" not in line]
    return ["".join(lines), *(line for line in lines[1:] if len(line) >= 24)]


def leaks(text: str, secrets: list[str], *, allow_marker: bool = False) -> list[str]:
    """What in `text` looks like private key material; empty when clean."""
    found = [f"secret #{i}" for i, s in enumerate(secrets) if s in text]
    if OPENSSH_BODY in text:
        found.append("an OpenSSH private key body")
    if PEM_BLOCK.search(text):
        found.append("a PEM private key block")
    if not allow_marker and BEGIN_MARKER in text:
        found.append("the OpenSSH private key marker")
    return found


# --- the tracked tree and .gitignore ---------------------------------------------------------------


def tracked_files() -> list[Path]:
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    return [REPO / name for name in out.decode().split("\0") if name]


def working_tree_keys() -> list[Path]:
    """Private host keys the tool generated in this checkout (git-ignored, so never tracked)."""
    return sorted(p for p in (REPO / "machines").glob("*/ssh_host_*_key") if p.is_file())


def test_tracked_tree_holds_no_private_key() -> None:
    secrets = [s for key in working_tree_keys() for s in key_secrets(key)]
    hits = {}
    files = tracked_files()
    for path in files:
        if path.is_symlink() or not path.is_file():
            continue
        # The parser's own BEGIN constant is allowed; a marker followed by a key body is not.
        found = leaks(path.read_bytes().decode(errors="replace"), secrets, allow_marker=True)
        if found:
            hits[str(path.relative_to(REPO))] = found
    assert hits == {}
    names = [p.relative_to(REPO) for p in files]
    assert not [n for n in names if re.fullmatch(r"ssh_host_\w+_key", n.name)], (
        "a private key file is tracked"
    )
    print(f"\ngrepped {len(files)} tracked files for {len(secrets)} working-tree key secrets: 0 hits")


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("machines/web1/ssh_host_ed25519_key", True),
        ("machines/new-vm/ssh_host_ed25519_key", True),
        ("machines/web1/ssh_host_rsa_key", True),
        # what ssh-keygen leaves in the machine's folder when a run is killed while it writes the key
        ("machines/web1/.keygen-abc123/key", True),
        ("machines/web1/.keygen-abc123/key.pub", True),
        ("machines/web1/ssh_host_ed25519_key.pub", False),
        ("machines/web1/machine-id", True),
        ("machines/web1/meta.nix", False),
    ],
)
def test_gitignore_keeps_private_keys_out_of_git_and_the_store(path: str, ignored: bool) -> None:
    tracked_files()  # skips outside a checkout
    done = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", "--no-index", path], check=False)
    assert (done.returncode == 0) is ignored, f"{path} ignored={not ignored}"


# --- files the tool writes on the host --------------------------------------------------------------


@pytest.fixture(params=[0o000, 0o022, 0o077], ids=["umask-000", "umask-022", "umask-077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_generated_identity_and_image_modes(tmp_path: Path, umask: int) -> None:
    directory = tmp_path / "machines" / "web1"
    made = generate_missing(directory, "web1")
    assert {str(n) for n in made} >= {
        "machine-id",
        "hostname",
        "ssh_host_ed25519_key",
        "ssh_host_ed25519_key.pub",
    }
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
    assert modes["ssh_host_ed25519_key"] == 0o600
    assert modes["ssh_host_ed25519_key.pub"] == 0o644
    assert modes["machine-id"] == 0o644
    assert not [name for name in modes if name.startswith(".")], "temporary files left behind"
    image = build_identity_disk(load_identity(directory, generate=False), tmp_path / "identity.img")
    assert stat.S_IMODE(image.stat().st_mode) == 0o600


def test_identity_disk_command_writes_a_private_image(
    project: Project, run_cli: RunCli, tmp_path: Path
) -> None:
    directory = project.machine_dir("web1")
    generate_missing(directory, "web1")
    out = tmp_path / "out" / "identity.img"
    out.parent.mkdir()
    result = run_cli("--debug", "identity-disk", str(directory), str(out), uri="")
    assert result.exit_code == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert leaks(result.stdout + result.stderr, key_secrets(directory / "ssh_host_ed25519_key")) == []


# --- what the tool prints: XML and logs ------------------------------------------------------------


def test_domain_xml_machines_json_and_debug_log_hold_no_secret(
    project: Project, run_cli: RunCli, tmp_path: Path
) -> None:
    image = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    directory = project.machine_dir("web1")
    generate_missing(directory, "web1")
    secrets = key_secrets(directory / "ssh_host_ed25519_key")
    machine_id = (directory / "machine-id").read_text().strip()
    result = run_cli("--debug", "xml", "web1", "--image", str(image))
    assert result.exit_code == 0, result.stderr
    xml = result.stdout
    assert xml.startswith("<domain")
    assert leaks(xml, secrets) == []
    assert leaks(result.stderr, secrets) == []
    # machine-id(5) asks to keep the machine-id confidential: the domain carries only a derivative.
    assert machine_id not in xml
    assert leaks(project.machines_file.read_text(), secrets) == []
    # The domain as libvirt stores it (test driver) is as clean as what ivm wrote.
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(xml)
        try:
            stored = dom.XMLDesc(0)
            assert leaks(stored, secrets) == [] and machine_id not in stored
        finally:
            dom.undefine()
    finally:
        conn.close()


# --- machines.json as Nix evaluates it -------------------------------------------------------------


def _nix() -> tuple[str, list[str]]:
    home = Path(os.environ.get("NIX_EVAL_HOME", "/opt/nix-eval"))
    nix = shutil.which("nix") or (str(home / "bin" / "nix") if (home / "bin" / "nix").exists() else None)
    if nix is None:
        pytest.skip("Nix is not installed")
    store_path = home / "nixpkgs.storepath"
    override = (
        ["--override-input", "nixpkgs", f"path:{store_path.read_text().strip()}"]
        if store_path.exists()
        else []
    )
    return nix, override


@pytest.mark.nix
def test_nix_evaluated_machines_json_holds_no_secret() -> None:
    nix, override = _nix()
    tracked_files()
    done = subprocess.run(
        [nix, "eval", "--json", "--no-write-lock-file", *override, f"{REPO}#lib.machines"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NIX_CONFIG": "experimental-features = nix-command flakes"},
    )
    if done.returncode != 0:
        pytest.skip(f"the flake does not evaluate here: {done.stderr.strip().splitlines()[-1:]}")
    text = json.dumps({"version": 1, "machines": json.loads(done.stdout)})
    secrets = [s for key in working_tree_keys() for s in key_secrets(key)]
    assert leaks(text, secrets) == []
    for name, machine in parse_machines(text).items():
        assert machine.name == name
    for key in working_tree_keys():
        assert key.read_text().strip() not in text
