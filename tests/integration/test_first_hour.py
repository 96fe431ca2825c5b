"""What a newcomer runs into on a real daemon: an `up --image` that cannot take effect says so, and
the commands the README and docs show for use without Nix run as written."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import Fleet, Images, vm_name


def test_up_with_another_image_says_the_vm_runs_another_base(fleet: Fleet, images: Images) -> None:
    name = fleet.add(vm_name())
    fleet.ivm("create", name, "--image", str(images.a))
    before = fleet.volumes()
    r = fleet.ivm("create", name, "--image", str(images.b))
    assert "nothing to do" not in r.stdout
    assert "not --image's base" in r.stdout and f"ivm upgrade {name} --image {images.b}" in r.stdout
    assert fleet.volumes() == before  # no second base imported, nothing replaced
    r = fleet.ivm("create", name, "--image", str(images.a))
    assert "nothing to do" in r.stdout and "not --image's" not in r.stdout


REPO = Path(__file__).resolve().parents[2]
MARK = "<!-- no-nix"
IMAGE_PLACEHOLDERS = ("~/images/nixos.qcow2", "/path/to/image.qcow2")
NOT_RUN = ("pip ", "python3 -m venv", "export PATH")  # installing the tool: the test runs this checkout


def no_nix_blocks() -> list[tuple[str, str]]:
    """Every ```sh block in README.md and docs/*.md that follows a `<!-- no-nix` marker."""
    found = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text()
        for match in re.finditer(r"<!-- no-nix[^\n]*-->\n```sh\n(.*?)```", text, re.DOTALL):
            found.append((f"{doc.name}:{text[: match.start()].count(chr(10)) + 1}", match.group(1)))
    return found


def test_the_docs_mark_their_no_nix_commands() -> None:
    places = [where for where, _ in no_nix_blocks()]
    assert any(p.startswith("README.md") for p in places) and any(
        p.startswith("operations.md") for p in places
    )


@pytest.mark.parametrize(("where", "block"), no_nix_blocks(), ids=[w for w, _ in no_nix_blocks()])
def test_no_nix_commands_run_as_written(
    fleet: Fleet, images: Images, tmp_path: Path, where: str, block: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    script = block
    for placeholder in IMAGE_PLACEHOLDERS:
        script = script.replace(placeholder, str(images.a))
    for name in ("demo", "web1"):  # test domains get random names
        script = re.sub(rf"\b{name}\b", fleet.add(vm_name(name)), script)
    lines = [line for line in script.splitlines() if not line.startswith(NOT_RUN)]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    doc = {
        "version": 1,
        "machines": {n: {"system": "x86_64-linux", "network": {"type": "none"}} for n in fleet.names},
    }
    (cwd / "machines.json").write_text(json.dumps(doc))  # what a block may take as given
    prelude = f'set -euo pipefail\nivm() {{ {shlex.quote(sys.executable)} -m ivm "$@"; }}\n'
    env = {**fleet.env(), "HOME": str(home), "PYTHONPATH": str(REPO / "python")}
    r = subprocess.run(
        ["bash", "-c", prelude + "\n".join(lines)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, f"{where} failed:\n{r.stdout}{r.stderr}"
    assert "Traceback" not in r.stderr
