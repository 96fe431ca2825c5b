"""The libvirt daemon restarted in the middle of `upgrade --all`: the run reports which VMs failed,
exits 1, and running it again finishes them. This restarts the *system* daemon (running guests
survive a restart), so it runs only where IVM_TEST_HOST_CHANGES=1 says the host may be changed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require_host_changes
from tests.integration.conftest import Fleet, Images, vm_name
from tests.lab.daemon import ensure_libvirt

DAEMONS = ("libvirtd", "virtqemud", "virtstoraged")
RESTART = "restarts the system libvirt daemon, which starts again at once"

pytestmark = pytest.mark.host_changes(what=RESTART)


def restart_system_daemon() -> None:
    """SIGTERM the running daemons, wait for them to exit, start them again."""
    require_host_changes(RESTART)
    pids = []
    for name in DAEMONS:
        found = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False)
        pids += [int(p) for p in found.stdout.split()]
    assert pids, "no libvirt daemon runs"
    try:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in pids):
            assert time.monotonic() < deadline, "the libvirt daemon did not exit"
            time.sleep(0.1)
    finally:
        ensure_libvirt()  # the daemon runs again however the wait ended


def test_daemon_restart_during_upgrade_all(fleet: Fleet, images: Images, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("restarts the system libvirt daemon: needs root")
    names = sorted(fleet.add(vm_name("rs")) for _ in range(3))
    for name in names:
        fleet.ivm("create", name, "--image", str(images.a))
        fleet.ivm("define", name)
    flag = tmp_path / "paused"
    env = {**fleet.env(), "IVM_FAILPOINT": "upgrade:stopped", "IVM_FAILPOINT_PAUSE": str(flag)}
    argv = fleet.argv("upgrade", "--all", "--image", str(images.b))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    restarted = False
    deadline = time.monotonic() + 300
    # The run stops itself at the failpoint once per VM; the daemon is restarted at the first stop.
    while proc.poll() is None:
        assert time.monotonic() < deadline, "upgrade --all did not finish"
        if flag.exists():
            pid = int(flag.read_text())
            flag.unlink()
            while Path(f"/proc/{pid}/stat").read_text().split()[2] != "T":
                time.sleep(0.05)
            if not restarted:
                restart_system_daemon()
                restarted = True
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.05)
    out, err = proc.communicate()
    assert restarted
    assert proc.returncode == 1, out + err
    assert f"{names[0]}: failed:" in out, out
    assert "2 upgraded, 0 up to date, 1 failed" in out, out
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("ivm: error: 1 of 3 VMs")

    again = fleet.ivm("upgrade", "--all", "--image", str(images.b))
    assert "1 upgraded, 2 up to date, 0 failed" in again.stdout, again.stdout
    for name in names:
        report = fleet.boot(name)
        assert report.marker == "B" and report.var_counter == 1
