"""The stand-in's root: a Debian minbase with systemd, sshd and the guest agent, made read-only-ready.

mmdebstrap downloads it once per suite and package list (cached as a tarball); this module then
shapes a copy like the ivm guest: empty /etc placeholders for the binds, no host keys, no machine-id,
nothing that runs on a timer or reaches out, sshd and journald set as the guest sets them.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from pathlib import Path

from tests.lab.standin.kernel import StandinError, cache_dir, run

from .golden import GuestGolden
from .mapping import BASE_HOSTS, root_store_files

PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "openssh-server",
    "qemu-guest-agent",
    "e2fsprogs",
    "sudo",
    "iproute2",
    "libnss-myhostname",  # NixOS resolves its own hostname with nss-myhostname too
    # The system bus, so logind runs: the agent's guest-shutdown (`shutdown +0`) and the ACPI power
    # button both go through logind, as on NixOS; without it a guest ignores `ivm stop`.
    "dbus",
)
# Kernel modules the running guest loads (the initrd has its own): NIC, guest agent channel, disks,
# and the ACPI power button, which logind turns into a poweroff when the agent is silent.
ROOT_MODULES = (
    "virtio_net",
    "virtio_console",
    "virtio_blk",
    "virtio_pci",
    "ext4",
    "erofs",
    "crc32c_generic",
    "button",
    "evdev",
)
# Units that fetch, keep time over the network or run on a timer: the guest must run none of them.
MASKED = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "apt-daily.service",
    "apt-daily-upgrade.service",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-timesyncd.service",
    "man-db.timer",
)
USERS = (("admin", 1000, ("sudo", "systemd-journal")), ("user", 1001, ()))


def suite() -> str:
    """The host's Debian release, which the stand-in follows (bookworm on 12, trixie on 13)."""
    found = re.search(r"^VERSION_CODENAME=(\S+)$", Path("/etc/os-release").read_text(), re.MULTILINE)
    if found is None:
        raise StandinError("/etc/os-release names no VERSION_CODENAME: the stand-in needs Debian")
    return found.group(1)


def base_tarball() -> Path:
    """mmdebstrap's minbase with PACKAGES, downloaded once per suite and package list."""
    key = hashlib.sha256(f"{suite()} {' '.join(PACKAGES)}".encode()).hexdigest()[:16]
    dest = cache_dir() / f"systemd-root-{suite()}-{key}.tar"
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mmdebstrap-", dir=dest.parent) as tmp:
        out = Path(tmp) / "root.tar"
        run(
            "mmdebstrap",
            "--quiet",
            "--mode=root",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            suite(),
            str(out),
        )
        out.replace(dest)
    return dest


def systemd_major(root: Path) -> int:
    """The major version of the systemd in the unpacked root (from libsystemd-shared-NNN.so)."""
    for lib in root.glob("usr/lib/*/systemd/libsystemd-shared-*.so"):
        found = re.search(r"libsystemd-shared-(\d+)", lib.name)
        if found:
            return int(found.group(1))
    raise StandinError(f"no libsystemd-shared in {root}: not a systemd root")


def _write(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    target.write_text(text)
    target.chmod(mode)


def _mask(root: Path, unit: str) -> None:
    link = root / "etc/systemd/system" / unit
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to("/dev/null")


def _enable(root: Path, unit: str, target: str) -> None:
    wants = root / "etc/systemd/system" / f"{target}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / unit
    if not link.is_symlink():
        dirs = ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")
        source = next(p for p in dirs if (root / p / unit).exists())
        link.symlink_to(f"/{source}/{unit}")


def _modules(root: Path, kernel_modules: Path, version: str) -> None:
    """Copy ROOT_MODULES and their dependencies (modules.dep) into the root, then index them."""
    deps: dict[str, list[str]] = {}
    for line in (kernel_modules / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {Path(p).name.split(".ko")[0].replace("-", "_"): p for p in deps}
    wanted: set[str] = set()
    for name in ROOT_MODULES:
        if name in by_name:
            wanted |= {by_name[name], *deps[by_name[name]]}
    dest = root / "lib/modules" / version
    for rel in wanted:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(kernel_modules / rel, dest / rel)
    for meta in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (kernel_modules / meta).exists():
            shutil.copy2(kernel_modules / meta, dest / meta)
    run("depmod", "-b", str(root), version)


def shape_root(root: Path, golden: GuestGolden, kernel_modules: Path, version: str) -> None:
    """Turn the unpacked Debian tree at `root` into the stand-in's root (run as root)."""
    sshd = golden.sshd_settings
    # Placeholders the initrd binds over, as modules/identity-binds.nix makes them.
    _write(root, "/etc/machine-id", "", 0o444)
    _write(root, "/etc/hostname", "")
    _write(root, "/etc/resolv.conf", golden.default_resolv_conf)
    for path, text in root_store_files(golden).items():
        _write(root, path, text, 0o444)
    _write(root, "/etc/hosts", BASE_HOSTS)
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # The guest's own lines; Debian's sshd_config includes sshd_config.d first, and the first value wins.
    _write(root, "/etc/ssh/sshd_config.d/ivm.conf", "".join(f"{k} {v}\n" for k, v in sshd.items()))
    # modules/ssh.nix: without an identity there is no host key, and sshd is skipped, not failed.
    _write(
        root,
        "/etc/systemd/system/ssh.service.d/ivm.conf",
        f"[Unit]\nConditionPathExists={sshd['HostKey'].splitlines()[0]}\n",
    )
    # modules/guest-agent.nix: the agent answers only on an accepted identity. Debian's own unit and
    # qemu-ga run it (Debian 12's qemu-ga predates --allow-rpcs); the guest's conditions come on top.
    _write(
        root,
        "/etc/systemd/system/qemu-guest-agent.service.d/ivm.conf",
        "[Unit]\n" + "".join(f"{line}\n" for line in golden.agent_conditions),
    )
    _write(root, "/etc/systemd/journald.conf.d/ivm.conf", golden.journald_conf)
    for unit in MASKED:
        _mask(root, unit)
    shutil.rmtree(root / "etc/systemd/system/timers.target.wants", ignore_errors=True)
    # DHCP on the NIC, as modules/network.nix does with networkd.
    _write(root, "/etc/systemd/network/80-ivm.network", "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n")
    _enable(root, "systemd-networkd.service", "multi-user.target")
    _enable(root, "systemd-networkd.socket", "sockets.target")
    shutil.copy2(root / "usr/share/systemd/tmp.mount", root / "etc/systemd/system/tmp.mount")
    _enable(root, "tmp.mount", "local-fs.target")
    for name, uid, groups in USERS:
        run(
            "chroot",
            str(root),
            "useradd",
            "-u",
            str(uid),
            "-U",
            "-M",
            "-d",
            f"/home/{name}",
            "-s",
            "/bin/bash",
            name,
        )
        run("chroot", str(root), "usermod", "-p", "*", *(["-aG", ",".join(groups)] if groups else []), name)
    _write(root, "/etc/sudoers.d/ivm", "admin ALL=(ALL:ALL) NOPASSWD: ALL\n", 0o440)
    # /home is the bind of /var/home: the users' homes are made at boot, as tmpfiles does on NixOS.
    _write(
        root, "/etc/tmpfiles.d/ivm-home.conf", "".join(f"d /home/{n} 0700 {n} {n} -\n" for n, _, _ in USERS)
    )
    _modules(root, kernel_modules, version)
    for d in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale"):
        shutil.rmtree(root / d, ignore_errors=True)
