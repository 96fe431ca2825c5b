"""The host tool's layers hold: libvirt is imported by hypervisor/ alone, and building the settings
(what every command does first, `--help` and completion included) loads no libvirt at all."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import Project

PACKAGE = Path(__file__).resolve().parents[2] / "python" / "ivm"
LIBVIRT = ("libvirt", "libvirt_qemu", "libvirtmod", "libvirtmod_qemu")

PROBE = """
import sys
from pathlib import Path
from ivm.config import Settings
s = Settings(machines_file=Path(sys.argv[1]), root=Path(sys.argv[2]))
m = s.machine("web1")
print(s.uri_for(m), s.pool_path_for("qemu:///session"), s.pool_path_for("qemu:///system"))
print(" ".join(sorted(n for n in sys.modules if n.split(".")[0] in {LIBVIRT!r})))
""".replace("{LIBVIRT!r}", repr(LIBVIRT))


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_only_hypervisor_imports_libvirt() -> None:
    importers = sorted(
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if _imports(p) & set(LIBVIRT)
    )
    assert importers, "the scan found no importer at all: it would pass whatever the tree holds"
    assert [p for p in importers if not p.startswith("hypervisor/")] == []


def test_building_settings_loads_no_libvirt(project: Project) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(project.machines_file), str(project.root)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    uri_and_paths, loaded = [*done.stdout.splitlines(), ""][:2]
    assert uri_and_paths.startswith("qemu:///system ") and "/libvirt/images/ivm" in uri_and_paths
    assert loaded == ""
