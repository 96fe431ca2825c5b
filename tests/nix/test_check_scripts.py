"""The NixOS test scripts in checks/ are linted here, so a typo cannot hide until a host runs them.

The test driver runs a script as one module: the IVM constants (checks/lib/guest.nix), the shared
helper checks/lib/guest.py, then the test's own checks/<name>.py, with the driver's globals (the
nodes, `subtest`, `t`, `create_machine`…) in scope. Each script is assembled the same way, then
compiled, checked for names that are neither defined nor driver globals, and, when ruff is present,
linted with the pyflakes rules the driver applies at build time (`ruff check --select F`).
"""

from __future__ import annotations

import builtins
import shutil
import subprocess
import symtable
from pathlib import Path

import pytest

from tests.nix.nixeval import REPO

CHECKS = REPO / "checks"
HELPER = CHECKS / "lib" / "guest.py"
# test_driver/driver.py `test_symbols()`; the nodes and VLANs are added per test below.
DRIVER_GLOBALS = {
    "start_all",
    "test_script",
    "machines",
    "vlans",
    "driver",
    "log",
    "os",
    "create_machine",
    "subtest",
    "run_tests",
    "join_all",
    "retry",
    "serial_stdout_off",
    "serial_stdout_on",
    "polling_condition",
    "BaseMachine",
    "QemuMachine",
    "NspawnMachine",
    "t",
    "debug",
    "dump_machine_ssh",
}
PRELUDE = 'import json\n\nIVM: dict = json.loads(r"""{}""")\n'

SCRIPTS = sorted(CHECKS.glob("*.py")) + sorted((CHECKS / "slow").glob("*.py"))
# Tests of the hypervisor side (checks/host-module.nix): one node `host`, the script alone.
HOST_TESTS = {"host-module"}


def is_slow(script: Path) -> bool:
    return script.parent.name == "slow"


def assemble(script: Path) -> str:
    """The script as the driver runs it (checks/lib/guest.nix `mkTest`, checks/slow/*.nix)."""
    if script.stem in HOST_TESTS:
        return script.read_text()
    if is_slow(script):
        return "\n".join([PRELUDE, script.read_text()])
    return "\n".join([PRELUDE, HELPER.read_text(), script.read_text()])


def driver_globals(script: Path) -> set[str]:
    """The driver's globals for this test: its nodes (and `machine` for a single node), its VLANs."""
    one_host = is_slow(script) or script.stem in HOST_TESTS
    nodes = {"host", "machine"} if one_host else {"client", "machine", "vlan1"}
    return DRIVER_GLOBALS | nodes


def undefined_globals(source: str, filename: str, known: set[str]) -> set[str]:
    """Global names the module reads but neither defines nor gets from the driver or builtins."""
    top = symtable.symtable(source, filename, "exec")
    defined = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    defined |= {child.get_name() for child in top.get_children()}
    used: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        for symbol in table.get_symbols():
            module_level = table is top
            defined_here = module_level and (symbol.is_assigned() or symbol.is_imported())
            if symbol.is_referenced() and (symbol.is_global() or module_level) and not defined_here:
                used.add(symbol.get_name())
        for child in table.get_children():
            walk(child)

    walk(top)
    return used - defined - known - set(dir(builtins))


def test_every_test_has_its_script() -> None:
    tests = {p.stem for p in CHECKS.glob("*.nix")} - {"default"}
    assert tests, "no tests in checks/"
    assert tests == {p.stem for p in CHECKS.glob("*.py")}
    slow = {p.stem for p in (CHECKS / "slow").glob("*.nix")} - {"default"}
    assert slow == {p.stem for p in (CHECKS / "slow").glob("*.py")}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_script_compiles_and_uses_only_known_names(script: Path) -> None:
    source = assemble(script)
    compile(source, str(script), "exec")
    assert undefined_globals(source, str(script), driver_globals(script)) == set()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_script_passes_the_drivers_pyflakes_rules(script: Path, tmp_path: Path) -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    # The driver prepends type hints that define its globals; declare them the same way.
    stubs = "".join(f"{name} = None\n" for name in sorted(driver_globals(script)))
    combined = tmp_path / f"{script.stem}.py"
    combined.write_text(stubs + assemble(script))
    proc = subprocess.run(
        [ruff, "check", "--no-cache", "--isolated", "--select", "F", str(combined)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_typo_is_caught() -> None:
    source = assemble(CHECKS / "read-only-root.py").replace("guest.boot()", "gest.boot()", 1)
    known = driver_globals(CHECKS / "read-only-root.py")
    assert undefined_globals(source, "typo.py", known) == {"gest"}
