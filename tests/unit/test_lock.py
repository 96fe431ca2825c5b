"""The lock and runtime directory against other local users: planted directories and symlinks are
refused, nothing is written through them, and the "busy" message carries a pid and nothing else.
An unwritable home falls back to a private directory; the in-process test driver takes no lock."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivm.errors import ToolError
from ivm.lock import holder_of, resource_lock
from ivm.runtime_dir import file_name, uri_tag
from tests.conftest import RunCli
from tests.unit.test_privilege import MAKES_A_USER, throwaway_user

URI = "qemu:///system"
PYTHON_DIR = Path(__file__).resolve().parents[2] / "python"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (another user's files, a mount namespace)")


@pytest.fixture
def rundir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where this test's runtime directory is: /run, /tmp and $XDG_RUNTIME_DIR all point into tmp_path."""
    for d in ("run", "tmp", "xdg"):
        (tmp_path / d).mkdir(mode=0o755)
    monkeypatch.setattr("ivm.runtime_dir.RUN_ROOT", tmp_path / "run")
    monkeypatch.setattr("ivm.runtime_dir.TMP_ROOT", tmp_path / "tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    return tmp_path / ("run" if os.geteuid() == 0 else "xdg") / "ivm"


def take(name: str = "web1", uri: str = URI) -> None:
    with resource_lock(uri, name):
        pass


def lock_file(rundir: Path, name: str = "web1") -> Path:
    return rundir / file_name(URI, name, ".lock")


def test_the_directory_is_made_private_whatever_the_umask(rundir: Path) -> None:
    old = os.umask(0o000)
    try:
        with resource_lock(URI, "web1"):
            assert lock_file(rundir).read_text() == str(os.getpid())
    finally:
        os.umask(old)
    assert (rundir.stat().st_mode & 0o777, rundir.stat().st_uid) == (0o700, os.geteuid())
    assert lock_file(rundir).stat().st_mode & 0o777 == 0o600


def test_a_lock_file_symlink_is_never_followed(rundir: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    rundir.mkdir(mode=0o700)
    lock_file(rundir).symlink_to(victim)
    with pytest.raises(ToolError, match=r"cannot open .*\.lock") as e, resource_lock(URI, "web1"):
        pass
    assert str(rundir) in e.value.message
    assert victim.read_text() == "precious\n"


def test_a_symlinked_directory_is_refused(rundir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    rundir.symlink_to(elsewhere)
    with (
        pytest.raises(ToolError, match=rf"refusing to use {rundir}: it is a symbolic link"),
        resource_lock(URI, "w"),
    ):
        pass
    assert list(elsewhere.iterdir()) == []


def test_a_group_writable_directory_is_refused(rundir: Path) -> None:
    rundir.mkdir()
    rundir.chmod(0o770)
    with pytest.raises(ToolError, match=r"is writable by group or others \(mode 0770\)") as e:
        take()
    assert "remove it" in (e.value.hint or "")
    assert not lock_file(rundir).exists()


@as_root
def test_a_directory_another_user_made_is_refused(rundir: Path) -> None:
    rundir.mkdir(mode=0o700)
    os.chown(rundir, 65534, 65534)
    with pytest.raises(ToolError, match=rf"refusing to use {rundir}: it is owned by uid 65534"):
        take()


def test_the_busy_message_shows_a_pid_and_nothing_the_file_says(rundir: Path) -> None:
    with resource_lock(URI, "web1"):
        pass
    lock_file(rundir).write_bytes(b"\x1b]0;owned\x07\x1b[2J 4242")
    fd = os.open(lock_file(rundir), os.O_RDWR)  # another holder: flock is per open file
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ToolError) as e, resource_lock(URI, "web1"):
            pass
        assert e.value.message == "web1 is busy: another ivm run is already working on it"
        os.pwrite(fd, b"4242", 0)
        os.ftruncate(fd, 4)
        with pytest.raises(ToolError, match=r"web1 is busy: ivm \(pid 4242\)"), resource_lock(URI, "web1"):
            pass
    finally:
        os.close(fd)
    assert holder_of(b"12\n") == "ivm (pid 12)"
    assert holder_of("\u0661\u0662".encode()) == "another ivm run"  # Arabic-Indic digits: not ASCII


def test_a_name_that_is_no_file_name_stays_in_the_directory(rundir: Path) -> None:
    with resource_lock(URI, "_pool-../../x"):
        pass
    assert [p.name for p in rundir.iterdir()] == [file_name(URI, "_pool-../../x", ".lock")]
    assert file_name(URI, "_base-abc", ".lock") == f"{uri_tag(URI)}-_base-abc.lock"


def test_the_test_driver_takes_no_lock(rundir: Path) -> None:
    with resource_lock("test:///default", "web1"), resource_lock("test:///default", "web1"):
        pass
    assert not rundir.exists()


def test_when_no_directory_can_be_made_the_error_names_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ivm.runtime_dir.RUN_ROOT", tmp_path / "missing-run")
    monkeypatch.setattr("ivm.runtime_dir.TMP_ROOT", tmp_path / "missing-tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/homeless-shelter")
    with pytest.raises(ToolError, match=r"ivm has no runtime directory for its locks \(.*missing-") as e:
        take()
    assert "set XDG_RUNTIME_DIR" in (e.value.hint or "")


# --- as a real unprivileged user, and as real root in /run ----------------------------------------

LOCK_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from ivm.errors import ToolError
    from ivm.lock import resource_lock
    try:
        with resource_lock("qemu:///session", "web1"):
            d = sys.argv[1]
            print(sorted(os.listdir(d)) if os.path.isdir(d) else f"no {d}")
    except ToolError as e:
        print("ivm: error:", e)
        sys.exit(1)
    """
)


@pytest.fixture
def homeless_user() -> Iterator[tuple[int, int]]:
    """A throwaway user (uid, gid), deleted with its /tmp/ivm-UID afterwards."""
    with throwaway_user() as user:
        try:
            yield user.pw_uid, user.pw_gid
        finally:
            shutil.rmtree(f"/tmp/ivm-{user.pw_uid}", ignore_errors=True)


def run_as(uid: int, gid: int, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "env", "-i"]
    pairs = [f"{k}={v}" for k, v in {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PYTHON_DIR), **env}.items()]
    return subprocess.run([*base, *pairs, *argv], capture_output=True, text=True, cwd="/")


def system_python() -> str:
    """A Python any user may run (the test's own may live under root's home); ivm.lock needs no
    third-party module."""
    for candidate in ("/usr/bin/python3", sys.executable):
        if Path(candidate).exists():
            return candidate
    pytest.skip("no system python")


@MAKES_A_USER
def test_a_homeless_build_user_falls_back_to_a_private_tmp_dir(homeless_user: tuple[int, int]) -> None:
    # The Nix build sandbox: HOME does not exist, no XDG_RUNTIME_DIR, not root.
    uid, gid = homeless_user
    r = run_as(
        uid, gid, [system_python(), "-c", LOCK_SCRIPT, f"/tmp/ivm-{uid}"], {"HOME": "/homeless-shelter"}
    )
    assert r.returncode == 0, r.stderr + r.stdout
    assert file_name("qemu:///session", "web1", ".lock") in r.stdout
    info = Path(f"/tmp/ivm-{uid}").lstat()
    assert (info.st_uid, info.st_mode & 0o777) == (uid, 0o700)


@MAKES_A_USER
def test_a_tmp_dir_planted_by_another_user_is_refused(homeless_user: tuple[int, int]) -> None:
    uid, gid = homeless_user
    planted = Path(f"/tmp/ivm-{uid}")
    planted.mkdir(mode=0o777)  # made by someone else (root here) before the user's first run
    planted.chmod(0o777)
    r = run_as(uid, gid, [system_python(), "-c", LOCK_SCRIPT, str(planted)], {"HOME": "/homeless-shelter"})
    assert r.returncode == 1
    assert r.stdout.strip() == (
        f"ivm: error: refusing to use {planted}: it is owned by uid 0, not by uid {uid} running ivm "
        "(remove it: another user may have made it; ivm then makes its own, private one)"
    )
    assert list(planted.iterdir()) == []


ROOT_ATTACK = textwrap.dedent(
    """
    set -eu
    mount -t tmpfs -o mode=0755 ivm-test /run
    mkdir -m 1777 /run/lock
    echo precious > /run/victim
    # The attack on the old lock directory: another user plants it and a symlink named after the lock.
    setpriv --reuid=65534 --regid=65534 --clear-groups sh -c \\
        'mkdir /run/lock/ivm && ln -s /run/victim /run/lock/ivm/{tag}-web1.lock'
    "$PYTHON" -c "$SCRIPT" /run/ivm
    cat /run/victim
    stat -c '%u %a %F' /run/ivm
    # A /run/ivm that another user owns (or that is a symlink) is refused.
    chown 65534 /run/ivm
    "$PYTHON" -c "$SCRIPT" /run/ivm || echo "refused $?"
    rm -rf /run/ivm && ln -s /run/lock/ivm /run/ivm
    "$PYTHON" -c "$SCRIPT" /run/ivm || echo "refused $?"
    cat /run/victim
    """
)


@as_root
def test_as_root_the_locks_live_in_run_ivm_and_planted_links_are_refused() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare")
    script = LOCK_SCRIPT.replace("qemu:///session", "qemu:///system")
    tag = uri_tag("qemu:///system")
    env = {**os.environ, "PYTHON": sys.executable, "SCRIPT": script, "PYTHONPATH": str(PYTHON_DIR)}
    # A private mount namespace with a fresh tmpfs on /run: the host's /run is never touched.
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", ROOT_ATTACK.format(tag=tag)],
        capture_output=True,
        text=True,
        env=env,
    )
    if r.returncode != 0 and not r.stdout and ("unshare failed" in r.stderr or "mount" in r.stderr):
        pytest.skip(f"no mount namespace here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"['{tag}-web1.lock']"
    assert lines[1] == "precious"
    assert lines[2] == "0 700 directory"
    assert lines[
        3
    ] == "ivm: error: refusing to use /run/ivm: it is owned by uid 65534, not by uid 0 running ivm " + (
        "(remove it: another user may have made it; ivm then makes its own, private one)"
    )
    assert lines[4] == "refused 1"
    assert lines[5].startswith("ivm: error: refusing to use /run/ivm: it is a symbolic link")
    assert lines[6:] == ["refused 1", "precious"]


def test_the_cli_says_in_one_line_which_directory_and_what_to_set(
    run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ivm.runtime_dir.RUN_ROOT", tmp_path / "missing-run")
    monkeypatch.setattr("ivm.runtime_dir.TMP_ROOT", tmp_path / "missing-tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/homeless-shelter")
    r = run_cli("start", "web1", uri="qemu:///system")  # the lock comes before any connection
    assert r.exit_code == 1, r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ivm: error: ivm has no runtime directory for its locks (")
    assert "missing-" in lines[0] and "set XDG_RUNTIME_DIR" in lines[0]
    assert "Traceback" not in r.output
