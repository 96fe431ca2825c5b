"""`qemu:///session`: a non-root user runs `ivm up` on its own per-user libvirt daemon.

The user is a throwaway system user (made here if missing, removed afterwards if made here) with a
Python environment of its own: the repository's .venv lives under /root, which other users cannot
read. Its pool must land in the user's ~/.local/share/libvirt/images/ivm, and the stand-in must boot
there (its console report is read as that user) and power itself off.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import machine_entry, require_host_changes
from tests.integration.conftest import BOOT_TIMEOUT, Images, vm_name
from tests.lab.report import parse_report

USER = "ivm-session-test"
COMMENT = "ivm integration tests, qemu session"  # no colon: it is a passwd field
USER_CHANGE = f"the system user {USER}, removed afterwards with its home"

pytestmark = [pytest.mark.integration, pytest.mark.host_changes(what=USER_CHANGE)]
URI = "qemu:///session"
REPO = Path(__file__).resolve().parents[2]
_ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Run as the user with the user's Python: say "ready" once connected (which spawns the session
# daemon), wait for the domain to run, then copy its console to stdout until the report is done.
CONSOLE_READER = """
import sys, time, libvirt
name, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
libvirt.registerErrorHandler(lambda _c, _e: None, None)
conn = libvirt.open("qemu:///session")
print("ready", file=sys.stderr, flush=True)
while True:  # until it runs and has its pty (a domain starts paused, without one)
    try:
        dom = conn.lookupByName(name)
        if dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING:
            stream = conn.newStream(0)
            dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            break
    except libvirt.libvirtError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"{name} never ran")
    time.sleep(0.05)
seen = b""
while b"IVM-REPORT done" not in seen and time.monotonic() < deadline:
    data = stream.recv(65536)
    if not isinstance(data, bytes) or not data:
        break
    seen += data
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
"""


def _setup_failed(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"qemu:///session test cannot be set up: {reason}")
    pytest.skip(f"qemu:///session test cannot be set up: {reason}")


def _tool(name: str) -> str:
    found = shutil.which(name, path=_ROOT_PATH)
    if found is None:
        _setup_failed(f"{name} not found")
    assert found is not None
    return found


@dataclass(frozen=True)
class SessionUser:
    name: str
    uid: int
    gid: int
    home: Path
    python: Path  # the user's Python, with ivm installed

    @property
    def ivm(self) -> Path:
        return self.python.parent / "ivm"

    def argv(self, *args: str | Path) -> list[str]:
        """A command run as the user, in a clean environment like a login's (no sbin on PATH)."""
        env = [f"HOME={self.home}", f"USER={self.name}", f"LOGNAME={self.name}"]
        env += ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"]
        return [_tool("runuser"), "-u", self.name, "--", "/usr/bin/env", "-i", *env, *map(str, args)]

    def run(self, *args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args), capture_output=True, text=True, cwd=self.home, timeout=timeout, check=False
        )

    def processes(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if entry.stat().st_uid == self.uid:
                        pids.append(int(entry.name))
        return pids

    def kill_processes(self, timeout: float = 15) -> None:
        """End what the user runs: its session daemons (libvirtd or virtqemud, virtlogd) and QEMU."""
        deadline = time.monotonic() + timeout
        sig = signal.SIGTERM
        while pids := self.processes():
            if time.monotonic() > deadline - timeout / 2:
                sig = signal.SIGKILL
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes of {self.name} would not die: {pids}")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(0.2)


def _install_venv(dest: Path) -> Path:
    """A venv made by the system Python (readable by everyone) with ivm installed from a copy of the
    source, so the build leaves nothing in the work tree."""
    src = dest / "src"
    shutil.copytree(
        REPO / "python", src / "python", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / f, src / f)
    venv = dest / "venv"
    for argv in (
        ["/usr/bin/python3", "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(src)],
    ):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
        if r.returncode != 0:
            _setup_failed(f"{' '.join(argv[:4])} failed: {(r.stderr or r.stdout).strip()[-600:]}")
    shutil.rmtree(src)
    return venv / "bin" / "python"


@pytest.fixture(scope="session")
def session_user() -> Iterator[SessionUser]:
    require_host_changes(USER_CHANGE)
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the qemu:///session test needs root (to make a throwaway user)")
        pytest.skip("the qemu:///session test needs root: it makes a throwaway user and runs as it")
    if not Path("/usr/bin/python3").is_file():
        _setup_failed("/usr/bin/python3 missing (install python3 and python3-venv)")
    try:
        # Ours, from a run that was killed before its teardown: remove it at the end this time.
        ours = pwd.getpwnam(USER).pw_gecos == COMMENT
    except KeyError:
        argv = [_tool("useradd"), "--system", "--create-home", "--comment", COMMENT]
        r = subprocess.run(
            [*argv, "--shell", "/usr/sbin/nologin", USER],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if r.returncode != 0:
            _setup_failed(f"useradd {USER} failed: {r.stderr.strip()}")
        ours = True
    entry = pwd.getpwnam(USER)
    venv_dir = Path(tempfile.mkdtemp(prefix="ivm-session-venv-", dir="/var/tmp"))
    try:
        venv_dir.chmod(0o755)
        python = _install_venv(venv_dir)
        yield SessionUser(USER, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir), python)
    finally:
        try:
            SessionUser(USER, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir), Path()).kill_processes()
        finally:
            shutil.rmtree(venv_dir, ignore_errors=True)
            # ivm's runtime directory as that user (no XDG_RUNTIME_DIR here): its locks and known_hosts
            shutil.rmtree(f"/tmp/ivm-{entry.pw_uid}", ignore_errors=True)
            if ours:
                subprocess.run(
                    [_tool("userdel"), "--remove", USER], capture_output=True, timeout=60, check=False
                )


def _give(path: Path, user: SessionUser) -> None:
    for p in [path, *path.rglob("*")]:
        os.chown(p, user.uid, user.gid, follow_symlinks=False)


def _status(user: SessionUser, ivm: Sequence[str | Path], name: str) -> dict[str, object]:
    r = user.run(*ivm, "status", name, "--json", "--no-eval", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 1
    row: dict[str, object] = rows[0]
    return row


def test_up_on_qemu_session_as_a_non_root_user(session_user: SessionUser, images: Images) -> None:
    user = session_user
    work = user.home / f"ivm-test-{secrets.token_hex(4)}"
    name = vm_name("ss")
    project = work / "project"
    (project / "machines").mkdir(parents=True)
    (project / "flake.nix").write_text("{ outputs = _: { }; }\n")
    entry = machine_entry(memory_mib=256, vcpus=1, var_size_gib=1, network={"type": "none"})
    (work / "machines.json").write_text(json.dumps({"version": 1, "machines": {name: entry}}))
    shutil.copy2(images.a, work / "a.raw")
    _give(work, user)
    ivm: list[str | Path] = [
        user.ivm,
        "--connect",
        URI,
        "--machines",
        work / "machines.json",
        "--root",
        project,
    ]
    pool = user.home / ".local" / "share" / "libvirt" / "images" / "ivm"
    reader: subprocess.Popen[str] | None = None
    try:
        reader = subprocess.Popen(
            user.argv(user.python, "-c", CONSOLE_READER, name, str(BOOT_TIMEOUT)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=user.home,
        )
        assert reader.stderr is not None
        # The first connection spawns the user's session daemon (~4 s here).
        waited = select.select([reader.stderr], [], [], 120)[0]
        ready = reader.stderr.readline() if waited else "(nothing after 120 s)"
        assert ready.strip() == "ready", f"console reader: {ready}"

        up = user.run(*ivm, "up", name, "--image", work / "a.raw")
        assert up.returncode == 0, up.stdout + up.stderr
        out, err = reader.communicate(timeout=BOOT_TIMEOUT + 30)
        report = parse_report(out.splitlines())
        assert report.done, f"no report (reader: {err.strip()}); console:\n{out[-3000:]}"
        assert report.efi and not report.errors, report
        assert (report.marker, report.var_counter, report.boot_write) == ("A", 1, "denied")

        deadline = time.monotonic() + 60
        while (status := _status(user, ivm, name))["state"] != "shut off":
            assert time.monotonic() < deadline, f"{name} did not power off: {status}"
            time.sleep(0.5)
        assert status["uri"] == URI
        volumes = {p.name for p in pool.iterdir()}
        assert {f"{name}-boot.qcow2", f"{name}-var.qcow2", f"{name}-identity.img"} <= volumes, volumes
        assert [v for v in volumes if v.startswith("base-")], volumes
        assert all(p.stat().st_uid == user.uid for p in pool.iterdir())
    finally:
        if reader is not None and reader.poll() is None:
            reader.terminate()
            reader.communicate(timeout=30)
        user.run(*ivm, "destroy", name, "--delete-data", timeout=120)
        user.run(*ivm, "gc", timeout=120)
        shutil.rmtree(work, ignore_errors=True)
    assert not [p for p in pool.iterdir() if p.name.startswith((name, "base-"))]
