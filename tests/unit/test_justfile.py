"""Every Justfile recipe, run with the real `just`, against recorders standing in for nix, virsh,
qemu-img, sudo, the host prefix and the tool: each records its argv and environment, so the tests
see which program each recipe calls, with what, and which steps run under SUDO."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The venv's own (rust-just from the test extras) first.
VENV_JUST = Path(sys.executable).parent / "just"
JUST = str(VENV_JUST) if VENV_JUST.is_file() else (shutil.which("just") or "just")

# One shell script under several names; its name says what it stands in for. It logs one line per
# call: its name and argv (unit-separated), then the environment the tool reads.
RECORDER = r"""#!/bin/sh
here=$(dirname "$(dirname "$(readlink -f "$0")")")
role=${0##*/}
{
  printf '%s' "$role"
  for a in "$@"; do printf '\037%s' "$a"; done
  printf '\036'
  for k in LIBVIRT_URI LIBVIRT_DEFAULT_URI OVMF_CODE OVMF_VARS NIX IVM_POOL IVM_POOL_PATH \
           IVM_VIRT_TYPE IVM_DEBUG SSH_AUTH_SOCK SUDO_USER HOSTED; do
    eval "isset=\${$k+y} v=\${$k-}"
    [ -n "$isset" ] && printf '%s=%s\037' "$k" "$v"
  done
  printf '\n'
} >> "$here/log"
for last; do :; done
case $role in
  host-spawn) HOSTED="${HOSTED-}+"; export HOSTED; exec "$@" ;;
  # like sudo's env_reset: only PATH (and the test's own HOSTED marker) survive
  sudo) exec env -i PATH="$PATH" ${HOSTED+HOSTED="$HOSTED"} SUDO_USER=someone "$@" ;;
  nix)
    case $1 in
      eval) printf 'web1 web2' ;;
      *) echo "$here/out/${last#*#}" ;;
    esac ;;
  ivm) case " $* " in *" xml "*) echo "<domain><name>$last</name></domain>" ;; esac ;;
esac
"""

NAMES_OF = 'm: builtins.concatStringsSep " " (builtins.attrNames m)'
ROLES = ("nix", "virsh", "qemu-img", "sudo", "host-spawn")


@dataclass
class Call:
    role: str
    argv: list[str]
    env: dict[str, str]


@dataclass
class Bench:
    project: Path
    bin: Path
    log: Path

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        self.log.write_text("")
        base = {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(self.project)}
        return subprocess.run(
            [JUST, *args], cwd=self.project, env={**base, **env}, capture_output=True, text=True
        )

    def calls(self) -> list[Call]:
        found = []
        for line in self.log.read_text().split("\n")[:-1]:
            argv, env = line.split("\x1e")
            role, *args = argv.split("\x1f")
            pairs = (item.partition("=") for item in env.split("\x1f")[:-1])
            found.append(Call(role, args, {k: v for k, _, v in pairs}))
        return found

    def of(self, role: str) -> list[Call]:
        return [c for c in self.calls() if c.role == role]


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    if not Path(JUST).is_file():
        if os.environ.get("CI"):
            pytest.fail("CI needs `just`: pip install rust-just (it is in the test extras)")
        pytest.skip("`just` is not installed (pip install rust-just)")
    project, bin_dir = tmp_path / "project", tmp_path / "bin"
    project.mkdir()
    bin_dir.mkdir()
    shutil.copy(REPO / "Justfile", project / "Justfile")
    (project / "flake.nix").write_text("{ outputs = _: { }; }\n")
    recorder = bin_dir / "recorder"
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    for role in ROLES:
        (bin_dir / role).symlink_to(recorder)
    tool = tmp_path / "out" / "ivm" / "bin"
    tool.mkdir(parents=True)
    (tool / "ivm").symlink_to(recorder)
    yield Bench(project, bin_dir, tmp_path / "log")


def tool_args(call: Call) -> list[str]:
    """What a recipe asked of the tool, after the arguments every call carries."""
    argv = call.argv
    assert argv[:2] == ["--machines", str(call_root(call).parent / "out" / "machines-json")], argv
    assert argv[2:6] == ["--root", str(call_root(call)), "--flake", str(call_root(call))], argv
    return argv[6:]


def call_root(call: Call) -> Path:
    return Path(call.argv[3])


# recipe and arguments -> the tool's arguments (None: the recipe does not run the tool)
TOOL_RECIPES: list[tuple[list[str], list[str]]] = [
    (["list-vms"], ["list"]),
    (["list-vms", "--json"], ["list", "--json"]),
    (["create-vm", "web1"], ["create", "--", "web1"]),
    (["create", "test"], ["create", "--", "test"]),
    (["define-vm", "web1"], ["define", "--", "web1"]),
    (["start-vm", "web1"], ["start", "--", "web1"]),
    (["start", "test"], ["start", "--", "test"]),
    (["up", "web1"], ["up", "--", "web1"]),
    (["stop-vm", "web1", "--force"], ["stop", "web1", "--force"]),
    (["upgrade", "web1"], ["upgrade", "web1"]),
    (["upgrade", "web1", "web2"], ["upgrade", "web1", "web2"]),
    (["upgrade", "--all"], ["upgrade", "--all"]),
    (["rollback", "web1"], ["rollback", "web1"]),
    (["gc", "--dry-run"], ["gc", "--dry-run"]),
    (["status"], ["status"]),
    (["status", "web1", "web2"], ["status", "web1", "web2"]),
    (["ssh", "web1", "uptime", "-p"], ["ssh", "web1", "uptime", "-p"]),
    (["ssh", "web1", "echo a  b"], ["ssh", "web1", "echo a  b"]),
    (["destroy-vm", "web1", "--delete-data"], ["destroy", "web1", "--delete-data"]),
    (["console", "web1"], ["console", "--", "web1"]),
]

SETTINGS: dict[str, dict[str, str]] = {
    "defaults": {},
    "sudo": {"SUDO": "sudo"},
    "host": {"HOST_CMD": "host-spawn"},
    "host+sudo": {"HOST_CMD": "host-spawn", "SUDO": "sudo"},
}


def prefixes(calls: list[Call], target: Call) -> list[str]:
    """The recorders that ran in front of `target`, nearest first (each execs the next)."""
    i = calls.index(target)
    chain: list[str] = []
    while i > 0 and calls[i - 1].role in ("sudo", "host-spawn"):
        i -= 1
        chain.append(calls[i].role)
    return chain


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize(("recipe", "expected"), TOOL_RECIPES, ids=[" ".join(r) for r, _ in TOOL_RECIPES])
def test_tool_recipes(bench: Bench, setting: str, recipe: list[str], expected: list[str]) -> None:
    env = SETTINGS[setting]
    r = bench.run(*recipe, **env)
    assert r.returncode == 0, r.stderr
    calls = bench.calls()
    tools = [c for c in calls if c.role == "ivm"]
    assert len(tools) == 1, calls
    assert tool_args(tools[0]) == expected
    host = ["host-spawn"] if "HOST_CMD" in env else []
    sudo = ["sudo"] if "SUDO" in env else []
    # the tool: SUDO nearest, HOST_CMD outside it, each exactly once
    assert prefixes(calls, tools[0]) == [*sudo, *host]
    assert tools[0].env.get("HOSTED") == ("+" if host else None)
    # Nix builds the tool and machines.json as the caller: HOST_CMD once, never SUDO
    nix = [c for c in calls if c.role == "nix"]
    assert [c.argv for c in nix] == [
        ["build", "--no-link", "--print-out-paths", ".#ivm"],
        ["build", "--no-link", "--print-out-paths", ".#machines-json"],
    ]
    for c in nix:
        assert prefixes(calls, c) == host and "SUDO_USER" not in c.env
    # what the tool reads survives sudo; its own nix has no host prefix (it already runs there)
    assert tools[0].env["LIBVIRT_URI"] == "qemu:///system"
    assert tools[0].env["NIX"] == "nix"
    assert tools[0].env["OVMF_CODE"] == "" and tools[0].env["OVMF_VARS"] == ""


@pytest.mark.parametrize("setting", SETTINGS)
def test_every_override_applies_once(bench: Bench, setting: str) -> None:
    env = {
        **SETTINGS[setting],
        "NIX": "host-spawn nix --offline" if "HOST_CMD" in SETTINGS[setting] else "nix --offline",
        "LIBVIRT_URI": "qemu:///session",
        "LIBVIRT_DEFAULT_URI": "test:///default",
        "OVMF_CODE": "/fw/CODE.fd",
        "OVMF_VARS": "/fw/VARS.fd",
        "IVM_POOL": "p",
        "IVM_POOL_PATH": "/pools/p",
        "IVM_VIRT_TYPE": "qemu",
        "IVM_DEBUG": "1",
        "SSH_AUTH_SOCK": "/run/agent.sock",
    }
    r = bench.run("up", "web1", **env)
    assert r.returncode == 0, r.stderr
    calls = bench.calls()
    assert [c.argv[-1] for c in calls if c.role == "nix"] == [".#ivm", ".#machines-json"]
    assert all(c.argv[0] == "--offline" for c in calls if c.role == "nix")
    assert not any(c.argv[:1] == ["host-spawn"] for c in calls if c.role == "host-spawn")
    (tool,) = [c for c in calls if c.role == "ivm"]
    assert tool.env == {
        "LIBVIRT_URI": "qemu:///session",
        "OVMF_CODE": "/fw/CODE.fd",
        "OVMF_VARS": "/fw/VARS.fd",
        "NIX": "nix --offline",
        "IVM_POOL": "p",
        "IVM_POOL_PATH": "/pools/p",
        "IVM_VIRT_TYPE": "qemu",
        "IVM_DEBUG": "1",
        "SSH_AUTH_SOCK": "/run/agent.sock",
        # without sudo the caller's whole environment passes, with it only what the Justfile hands on
        **({"SUDO_USER": "someone"} if "SUDO" in env else {"LIBVIRT_DEFAULT_URI": "test:///default"}),
        **({"HOSTED": "+"} if "HOST_CMD" in env else {}),
    }


def test_libvirt_default_uri_is_honoured_below_libvirt_uri(bench: Bench) -> None:
    bench.run("status", LIBVIRT_DEFAULT_URI="test:///default")
    assert bench.of("ivm")[0].env["LIBVIRT_URI"] == "test:///default"
    bench.run("virsh", "list", LIBVIRT_DEFAULT_URI="test:///default", LIBVIRT_URI="qemu:///session")
    assert bench.of("virsh")[0].argv == ["-c", "qemu:///session", "list"]


@pytest.mark.parametrize("setting", SETTINGS)
def test_virsh_recipe(bench: Bench, setting: str) -> None:
    env = SETTINGS[setting]
    r = bench.run("virsh", "dominfo", "web 1", **env)
    assert r.returncode == 0, r.stderr
    calls = bench.calls()
    (virsh,) = bench.of("virsh")
    assert virsh.argv == ["-c", "qemu:///system", "dominfo", "web 1"]
    host = ["host-spawn"] if "HOST_CMD" in env else []
    assert prefixes(calls, virsh) == [*(["sudo"] if "SUDO" in env else []), *host]
    assert not bench.of("nix")


def test_virsh_override_is_used_as_given(bench: Bench) -> None:
    bench.run("virsh", "list", VIRSH="virsh --quiet", HOST_CMD="host-spawn", SUDO="sudo")
    calls = bench.calls()
    assert [c.role for c in calls] == ["virsh"]
    assert calls[0].argv == ["--quiet", "-c", "qemu:///system", "list"]


@pytest.mark.parametrize("setting", SETTINGS)
def test_build_runs_nix_unprivileged(bench: Bench, setting: str) -> None:
    env = SETTINGS[setting]
    r = bench.run("build", **env)
    assert r.returncode == 0, r.stderr
    calls = bench.calls()
    assert [c.argv for c in calls if c.role == "nix"] == [
        ["eval", "--raw", ".#lib.machines", "--apply", NAMES_OF],
        ["build", "--no-link", "--print-out-paths", ".#image-web1"],
        ["build", "--no-link", "--print-out-paths", ".#image-web2"],
    ]
    assert not bench.of("sudo") and not bench.of("ivm")
    host = ["host-spawn"] if "HOST_CMD" in env else []
    assert all(prefixes(calls, c) == host for c in calls if c.role == "nix")
    r = bench.run("build", "web2", **env)
    assert [c.argv[-1] for c in bench.of("nix")] == [".#image-web2"]


@pytest.mark.parametrize("setting", SETTINGS)
def test_image_info(bench: Bench, setting: str) -> None:
    env = SETTINGS[setting]
    r = bench.run("image-info", "web1", **env)
    assert r.returncode == 0, r.stderr
    calls = bench.calls()
    assert [c.role for c in calls if c.role not in ("host-spawn",)] == ["nix", "qemu-img"]
    (qemu_img,) = bench.of("qemu-img")
    assert qemu_img.argv == ["info", str(bench.project.parent / "out" / "image-web1" / "ivm.qcow2")]
    assert not bench.of("sudo")


@pytest.mark.parametrize("setting", SETTINGS)
def test_build_libvirt_xml_files_are_the_callers(bench: Bench, setting: str) -> None:
    env = SETTINGS[setting]
    r = bench.run("build-libvirt-xml", **env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["libvirt/web1.xml", "libvirt/web2.xml"]
    assert [tool_args(c) for c in bench.of("ivm")] == [["xml", "--", "web1"], ["xml", "--", "web2"]]
    # the tool and machines.json are built once for both
    assert len(bench.of("nix")) == 3
    for name in ("web1", "web2"):
        written = bench.project / "libvirt" / f"{name}.xml"
        assert written.read_text() == f"<domain><name>{name}</name></domain>\n"
        assert written.stat().st_uid == os.getuid()
    assert sorted(p.name for p in (bench.project / "libvirt").iterdir()) == ["web1.xml", "web2.xml"]


def test_list_lists_recipes_with_spec_names(bench: Bench) -> None:
    for args in (["list"], []):
        r = bench.run(*args, JUST=JUST)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("Available recipes:")
        for name in (
            "build ",
            "build-libvirt-xml",
            "create-vm NAME",
            "[alias: create]",
            "start-vm NAME",
            "[alias: start]",
            "upgrade +NAMES",
            "list-vms",
            "define-vm NAME",
        ):
            assert name in r.stdout
        assert not bench.calls()


def test_tool_failure_is_the_tools_one_line(bench: Bench, tmp_path: Path) -> None:
    failing = tmp_path / "out" / "ivm" / "bin" / "ivm"
    failing.unlink()
    failing.write_text("#!/bin/sh\necho 'ivm: error: web1 is busy; wait' >&2\nexit 1\n")
    failing.chmod(0o755)
    r = bench.run("up", "web1")
    assert r.returncode == 1
    assert r.stderr.strip() == "ivm: error: web1 is busy; wait"


def test_failed_nix_build_stops_before_the_tool(bench: Bench) -> None:
    nix = bench.bin / "nix"
    nix.unlink()
    nix.write_text("#!/bin/sh\necho 'error: build failed' >&2\nexit 1\n")
    nix.chmod(0o755)
    r = bench.run("create", "web1", SUDO="sudo")
    assert r.returncode != 0 and "error: build failed" in r.stderr
    assert not bench.of("ivm") and not bench.of("sudo")
