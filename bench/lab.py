"""The bench's scratch world: its own pool, project folder and VMs on the real libvirt daemon, driven
through the real `ivm` CLI in subprocesses (as a user runs it), and removed afterwards, even on failure.

Built on the test lab (tests/lab): the daemon starter, scratch pool directories QEMU can reach, and the
stand-in guest image (a UEFI disk that prints `IVM-REPORT ...` lines on its console and powers off).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import libvirt
from tests.lab.daemon import ensure_libvirt
from tests.lab.pool import scratch_pool_dir
from tests.lab.standin.image import build_standin_image

from bench.stats import clock
from ivm.runtime_dir import candidates, file_name


class BenchError(RuntimeError):
    """A step of the bench failed; the message says which and shows its output."""


def ivm_command() -> list[str]:
    """The installed `ivm` script beside this interpreter (what a user runs), else `python -m ivm`."""
    script = Path(sys.executable).with_name("ivm")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ivm"]


class Lab:
    """One bench run's pool, project and VMs. Use as a context manager: leaving it removes them all."""

    def __init__(self) -> None:
        self.uri = ensure_libvirt()
        self.prefix = f"bench{secrets.token_hex(2)}"
        self.pool = f"ivm-{self.prefix}"
        self._stack = ExitStack()
        self.scratch = Path()
        self.conn: Any = None
        self.machines: dict[str, dict[str, Any]] = {}
        self._images: dict[str, Path] = {}

    def __enter__(self) -> Lab:
        self.scratch = self._stack.enter_context(scratch_pool_dir())
        self.work.mkdir()
        (self.root / "machines").mkdir(parents=True)
        (self.root / "flake.nix").write_text("{ outputs = _: { }; }\n")
        self._write_machines()
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        self.conn = libvirt.open(self.uri)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.remove_everything()
        finally:
            self.conn.close()
            self._stack.close()

    # --- layout -------------------------------------------------------------------------------
    @property
    def work(self) -> Path:
        return self.scratch / "work"

    @property
    def root(self) -> Path:
        return self.work / "project"

    @property
    def pool_path(self) -> Path:
        return self.scratch / "pool"

    @property
    def machines_file(self) -> Path:
        return self.work / "machines.json"

    def name(self, label: str) -> str:
        return f"{self.prefix}-{label}"

    def image(self, marker: str) -> Path:
        """The stand-in guest image printing `marker`, built once per run."""
        if marker not in self._images:
            self._images[marker] = build_standin_image(self.work / f"standin-{marker}.raw", marker)
        return self._images[marker]

    # --- machines and the CLI -----------------------------------------------------------------
    def add_machines(self, names: list[str], var_size_gib: int = 20) -> None:
        """Declare machines as the flake would (no NIC: the stand-in needs none), with the identity
        files a real machine has besides the generated ones."""
        for name in names:
            self.machines[name] = {
                "system": "x86_64-linux",
                "vcpus": 1,
                "memory_mib": 256,
                "var_size_gib": var_size_gib,
                "network": {"type": "none"},
                "mac": None,
                "libvirt_uri": None,
                "image_attr": "image-bench",
            }
            folder = self.root / "machines" / name
            folder.mkdir(exist_ok=True)
            (folder / "resolv.conf").write_text("nameserver 192.0.2.53\nsearch example.org\n")
            (folder / "hosts").write_text("192.0.2.10 db.example.org db\n")
            (folder / "tcp_ports").write_text("22\n443\n")
        self._write_machines()

    def _write_machines(self) -> None:
        self.machines_file.write_text(json.dumps({"version": 1, "machines": self.machines}))

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IVM_", "OVMF_"))}
        env.update(IVM_POOL=self.pool, IVM_POOL_PATH=str(self.pool_path), LIBVIRT_URI=self.uri)
        env["XDG_CACHE_HOME"] = str(self.work / "cache")  # ivm's image hash cache goes with the run
        return env

    def ivm_argv(self, *args: str) -> list[str]:
        return [*ivm_command(), "--machines", str(self.machines_file), "--root", str(self.root), *args]

    def ivm(self, *args: str, timeout: float = 600, env: dict[str, str] | None = None) -> tuple[str, float]:
        """Run `ivm ARGS` in a subprocess (with `env` added); return its stdout and wall-clock seconds."""
        with clock() as c:
            done = subprocess.run(
                self.ivm_argv(*args),
                capture_output=True,
                text=True,
                env={**self.env(), **(env or {})},
                timeout=timeout,
                check=False,
            )
        if done.returncode != 0:
            raise BenchError(f"ivm {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done.stdout, c.seconds

    # --- the pool -----------------------------------------------------------------------------
    def pool_obj(self) -> Any:
        return self.conn.storagePoolLookupByName(self.pool)

    def volume_path(self, name: str) -> Path:
        return self.pool_path / name

    def base_volumes(self) -> list[str]:
        return sorted(p.name for p in self.pool_path.glob("base-*.qcow2"))

    def allocated(self, names: list[str] | None = None) -> dict[str, int]:
        """Bytes allocated on disk (blocks, not apparent size) per file in the pool directory."""
        files = [self.pool_path / n for n in names] if names is not None else self.pool_path.iterdir()
        return {p.name: p.stat().st_blocks * 512 for p in files if p.is_file()}

    def delete_volume(self, name: str) -> None:
        pool = self.pool_obj()
        with contextlib.suppress(libvirt.libvirtError):
            pool.storageVolLookupByName(name).delete(0)

    # --- removal ------------------------------------------------------------------------------
    def remove_vms(self, names: list[str]) -> None:
        """Power off, undefine (with NVRAM) and delete the disks and identity folders of `names`."""
        for name in names:
            try:
                dom = self.conn.lookupByName(name)
            except libvirt.libvirtError:
                dom = None
            if dom is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    dom.destroy()
                dom.undefineFlags(
                    libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                )
            for suffix in ("-boot.qcow2", "-var.qcow2", "-identity.img"):
                self.delete_volume(name + suffix)
            shutil.rmtree(self.root / "machines" / name, ignore_errors=True)
            self._remove_lock(name)
            self.machines.pop(name, None)
        self._write_machines()

    def _remove_lock(self, name: str) -> None:
        # ivm's lock files (ivm/lock.py) in its runtime directory: one per VM, and _<name> for
        # shared work (a base import, the pool's creation)
        for lock in (file_name(self.uri, name, ".lock"), file_name(self.uri, f"_{name}", ".lock")):
            (candidates()[0] / lock).unlink(missing_ok=True)

    def remove_everything(self) -> None:
        """Every domain named with this run's prefix, every volume in the pool, then the pool."""
        doms = [d.name() for d in self.conn.listAllDomains(0) if d.name().startswith(f"{self.prefix}-")]
        self.remove_vms(doms)
        try:
            pool = self.pool_obj()
        except libvirt.libvirtError:
            return
        if pool.isActive():
            with contextlib.suppress(libvirt.libvirtError):
                pool.refresh(0)
            for vol in pool.listAllVolumes(0):
                with contextlib.suppress(libvirt.libvirtError):
                    vol.delete(0)
                self._remove_lock(vol.name())
            pool.destroy()
        pool.undefine()
        self._remove_lock(f"pool-{self.pool}")
