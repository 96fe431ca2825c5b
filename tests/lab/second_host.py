"""A second libvirt "host" on this machine, reached by a `qemu+unix:///system?socket=…` URI.

It shares nothing with the system daemon: its daemons (virtlogd plus libvirtd, or the modular
virtqemud + virtstoraged where libvirtd is not installed) run in a private mount namespace where
scratch directories are bind-mounted over /etc/libvirt (a copy of the top-level config files, no
domain, network or pool definitions), /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and
/var/log/libvirt. The socket lands in the scratch directory bound over /run/libvirt, so this
process reaches it through the scratch path: same directory, seen from outside the namespace.

The namespace is also a private pid namespace whose first process is this file run as a script: a
tiny init that mounts, starts the daemons in the foreground and reaps every orphan (QEMU
included). When it exits, the kernel kills whatever is left in the namespace, so no QEMU or daemon
can outlive the host, however the test ends. `unshare --kill-child` and a parent-death signal on
`unshare` itself chain that to the death of the test process too.

Pools must live under `pool_base`: it has the same path inside and outside the namespace, and the
libvirt-qemu user can traverse it. Needs root, `unshare` and `mount` (util-linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# What the namespace sees (key) and the scratch directory bound over it (value).
BINDS = {
    "/etc/libvirt": "etc",
    "/run/libvirt": "run",
    "/var/lib/libvirt": "lib",
    "/var/cache/libvirt": "cache",
    "/var/log/libvirt": "log",
}
_MODES = {"etc": 0o755, "run": 0o755, "lib": 0o755, "cache": 0o711, "log": 0o700}
_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The socket the URI names, per daemon that serves the qemu driver.
_SOCKETS = {"libvirtd": "libvirt-sock", "virtqemud": "virtqemud-sock"}
_PR_SET_PDEATHSIG = 1


class SecondHostError(RuntimeError):
    """The second daemon could not be started."""


def _find(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), _SBIN_PATH]))


def daemon_set() -> list[str]:
    """virtlogd + libvirtd where libvirtd is installed (Debian 12, and 13 with libvirt-daemon),
    else the modular daemons the qemu driver needs: virtstoraged first, as virtqemud forwards
    storage calls to it over /run/libvirt/virtstoraged-sock."""
    names = ["virtlogd", "libvirtd"] if _find("libvirtd") else ["virtlogd", "virtstoraged", "virtqemud"]
    found = {n: _find(n) for n in names}
    missing = [n for n, path in found.items() if path is None]
    if missing:
        raise SecondHostError(f"not installed: {', '.join(missing)} (install libvirt-daemon-system)")
    return [p for p in found.values() if p is not None]


@dataclass
class SecondHost:
    uri: str
    root: Path  # the scratch tree; everything the host writes is under it
    pool_base: Path  # put pool directories here
    log: Path  # the init's and the daemons' output
    daemons: tuple[str, ...]
    started_in: float  # seconds from unshare to the daemon answering
    _unshare: subprocess.Popen[bytes]
    _pid_ns: str  # e.g. "pid:[4026532301]", to find every process left in the namespace

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def processes(self) -> list[int]:
        """Every process still in the host's pid namespace (daemons, QEMU, the init)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if (entry / "ns" / "pid").readlink() == Path(self._pid_ns):
                        found.append(int(entry.name))
        return found

    def alive(self) -> bool:
        return self._unshare.poll() is None


def _copy_config(dest: Path) -> None:
    """The top-level *.conf files of /etc/libvirt, without domain, network, pool or secret
    definitions: those belong to the system daemon (a copied autostart network would clash)."""
    dest.mkdir(mode=0o755)
    src = Path("/etc/libvirt")
    for f in src.iterdir() if src.is_dir() else ():
        if f.is_file() and f.suffix == ".conf":
            shutil.copy2(f, dest / f.name)
    for name in ("libvirtd.conf", "virtqemud.conf", "virtstoraged.conf", "virtlogd.conf"):
        conf = dest / name
        if conf.exists():
            with conf.open("a") as out:
                # Warnings to stderr, which goes to the host's log file (the system daemon's own
                # log settings may name a file or journald).
                out.write('\n# ivm test second host\nlog_outputs = "3:stderr"\n')


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here, not in the forked child


def _set_pdeathsig() -> None:
    """In unshare, between fork and exec: SIGKILL it when the test process dies (then the init and
    the whole namespace die too). Only a prctl call, safe in a child forked from a threaded parent."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@contextmanager
def second_host(base: Path | None = None, timeout: float = 60.0) -> Iterator[SecondHost]:
    """Start a second libvirt host, yield it, and tear it down: every process and directory."""
    if os.geteuid() != 0:
        raise SecondHostError("a second libvirt daemon needs root")
    unshare = _find("unshare")
    if unshare is None or _find("mount") is None:
        raise SecondHostError("unshare or mount not found: install util-linux and mount")
    daemons = daemon_set()
    parent = base or Path(os.environ.get("IVM_TEST_SECOND_HOST_BASE", "/var/tmp"))
    root = Path(tempfile.mkdtemp(prefix="ivm-host2-", dir=parent))
    proc: subprocess.Popen[bytes] | None = None
    host: SecondHost | None = None
    try:
        root.chmod(0o755)  # libvirt-qemu must traverse it to reach the pools
        _copy_config(root / "etc")
        for name, mode in _MODES.items():
            (root / name).mkdir(mode=mode, exist_ok=True)
            (root / name).chmod(mode)
        (root / "pools").mkdir(mode=0o755)
        log = root / "daemons.log"
        argv = [
            unshare,
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "--propagation",
            "private",
            "--",
            sys.executable,
            "-I",
            str(Path(__file__).resolve()),
            str(root),
            *daemons,
        ]
        started = time.monotonic()
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={"PATH": _SBIN_PATH, "LANG": "C.UTF-8"},
                preexec_fn=_set_pdeathsig,  # noqa: PLW1509 - see _set_pdeathsig
            )
        main = Path(daemons[-1]).name
        uri = f"qemu+unix:///system?socket={root / 'run' / _SOCKETS[main]}"
        pid_ns = _wait_pid_ns(proc)
        host = SecondHost(
            uri, root, root / "pools", log, tuple(Path(d).name for d in daemons), 0.0, proc, pid_ns
        )
        _wait_answer(host, timeout)
        host.started_in = time.monotonic() - started
        yield host
    finally:
        try:
            if host is not None:
                _stop(host)
            elif proc is not None:
                proc.kill()
                proc.wait(10)
        finally:
            _remove(root)


def _wait_pid_ns(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> str:
    """The pid namespace of unshare's child: the init, pid 1 inside."""
    deadline = time.monotonic() + timeout
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            child = int(children.read_text().split()[0])
            ns = str(Path(f"/proc/{child}/ns/pid").readlink())
            if ns != str(Path("/proc/self/ns/pid").readlink()):
                return ns
        time.sleep(0.02)
    raise SecondHostError(f"unshare did not start its namespace (exit {proc.poll()})")


def _wait_answer(host: SecondHost, timeout: float) -> None:
    """Until the daemon lists storage pools on its URI: that needs the qemu and storage drivers."""
    virsh = _find("virsh")
    if virsh is None:
        raise SecondHostError("virsh not found: install libvirt-clients")
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not host.alive():
            raise SecondHostError(f"the second host's init exited; its log:\n{host.log_tail()}")
        try:
            r = subprocess.run(
                [virsh, "-c", host.uri, "pool-list", "--all"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            if r.returncode == 0:
                return
            last = r.stderr.strip()
        except subprocess.TimeoutExpired:
            last = "virsh timed out"
        time.sleep(0.2)
    raise SecondHostError(f"no answer at {host.uri} after {timeout:.0f} s ({last}); log:\n{host.log_tail()}")


def _stop(host: SecondHost) -> None:
    """Destroy its domains through libvirt (so the daemon removes their cgroups), stop the daemons
    gracefully, then kill whatever is left in the namespace."""
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    if host.alive():
        try:
            conn = libvirt.open(host.uri)
            try:
                for dom in conn.listAllDomains(0):
                    with contextlib.suppress(libvirt.libvirtError):
                        if dom.isActive():
                            dom.destroy()
            finally:
                conn.close()
        except libvirt.libvirtError:
            pass
    init = _init_pid(host)
    if init is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(init, signal.SIGTERM)  # the init stops the daemons, then exits
    try:
        host._unshare.wait(30)
    except subprocess.TimeoutExpired:
        host._unshare.kill()  # --kill-child: the init dies, and the namespace with it
        host._unshare.wait(10)
    deadline = time.monotonic() + 15
    while left := host.processes():
        if time.monotonic() > deadline:
            raise SecondHostError(f"processes outlived the second host: {left}")
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _init_pid(host: SecondHost) -> int | None:
    try:
        pids = Path(f"/proc/{host._unshare.pid}/task/{host._unshare.pid}/children").read_text().split()
    except OSError:
        return None
    return int(pids[0]) if pids else None


def _remove(root: Path) -> None:
    # The bind mounts exist only in the host's namespace: here these are plain directories.
    shutil.rmtree(root, ignore_errors=True)


# --- the init, pid 1 of the host's namespaces -------------------------------------------------


def _init(root: Path, daemons: list[str]) -> int:
    stopping = False

    def stop(_signo: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for target, source in BINDS.items():
        Path(target).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "--bind", str(root / source), target], check=True)
    running: dict[int, str] = {}
    for daemon in daemons:
        name = Path(daemon).name
        # Own pid files: the system daemons hold /run/<name>.pid locked.
        p = subprocess.Popen([daemon, "--pid-file", f"/run/libvirt/ivm-test-{name}.pid"])
        running[p.pid] = name
        print(f"second host: started {name} (pid {p.pid} in the namespace)", flush=True)
        sock = {"virtlogd": "virtlogd-sock", "virtstoraged": "virtstoraged-sock"}.get(name)
        deadline = time.monotonic() + 20
        while sock and not Path("/run/libvirt", sock).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    status = 0
    stop_deadline: float | None = None
    while running:
        if stopping and stop_deadline is None:
            stop_deadline = time.monotonic() + 20
            for pid in reversed(running):  # the qemu driver first, virtlogd last
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        if stop_deadline is not None and time.monotonic() > stop_deadline:
            print(f"second host: {sorted(running.values())} ignored SIGTERM", flush=True)
            return 1
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)  # reap every orphan, QEMU's too
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.1)
            continue
        exited = running.pop(pid, None)
        if exited is not None and not stopping:
            print(f"second host: {exited} exited ({wait_status:#x}); stopping", flush=True)
            stopping, status = True, 1
    return status


if __name__ == "__main__":
    sys.exit(_init(Path(sys.argv[1]), sys.argv[2:]))
