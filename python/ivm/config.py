"""Settings from command-line options and environment, resolved once per run."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ivm.domain_xml import Firmware
from ivm.errors import UsageError
from ivm.hypervisor.uri import checked_uri, default_pool_path
from ivm.machines import Machine, get_machine, load_machines
from ivm.privilege import Account, owner_account
from ivm.volumes import DEFAULT_POOL

DEFAULT_URI = "qemu:///system"


POOL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_pool(pool: str, pool_path: str | None) -> None:
    """IVM_POOL names a folder too (the default path) and IVM_POOL_PATH goes to the daemon as is."""
    if not POOL_NAME_RE.fullmatch(pool):
        raise UsageError(
            f"IVM_POOL {pool!r} is not a usable pool name",
            "use letters, digits, '.', '_' and '-' (at most 64), starting with a letter or digit",
        )
    if pool_path is not None and not pool_path.startswith("/"):
        raise UsageError(
            f"IVM_POOL_PATH {pool_path!r} is not an absolute path",
            "give the full path of the pool's directory on the hypervisor, e.g. /var/lib/libvirt/images/"
            + pool,
        )


def find_root(start: Path) -> Path | None:
    """The nearest ancestor holding flake.nix: the project whose machines/ folder we use."""
    for candidate in (start, *start.parents):
        if (candidate / "flake.nix").is_file():
            return candidate
    return None


@dataclass(frozen=True)
class Settings:
    machines_file: Path | None = None
    root: Path | None = None
    flake: str | None = None
    connect: str | None = None  # --connect: beats everything
    env_uri: str | None = None  # LIBVIRT_URI, else LIBVIRT_DEFAULT_URI: when the machine names none
    pool: str = DEFAULT_POOL
    pool_path: str | None = None
    virt_type: str | None = None
    firmware: Firmware = field(default_factory=Firmware)
    nix: str = "nix"
    host_ca: Path | None = None  # --host-ca or IVM_HOST_CA: the SSH host CA's private key (a path only)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **given: object) -> Settings:
        """Fill what options left unset from the environment (names follow the spec's Justfile)."""
        env = os.environ if env is None else env
        code, template = env.get("OVMF_CODE") or None, env.get("OVMF_VARS") or None
        if template and not code:
            raise UsageError("OVMF_VARS is set without OVMF_CODE", "set both, or neither")
        values: dict[str, object] = {
            # ivm's own variable first; LIBVIRT_DEFAULT_URI is what every libvirt client reads.
            "env_uri": env.get("LIBVIRT_URI") or env.get("LIBVIRT_DEFAULT_URI") or None,
            "pool": env.get("IVM_POOL") or DEFAULT_POOL,
            "pool_path": env.get("IVM_POOL_PATH") or None,
            "virt_type": env.get("IVM_VIRT_TYPE") or None,
            "firmware": Firmware(code, template),
            "nix": env.get("NIX") or "nix",
            "host_ca": Path(env["IVM_HOST_CA"]) if env.get("IVM_HOST_CA") else None,
        }
        values.update({k: v for k, v in given.items() if v is not None})
        env_source = "LIBVIRT_URI" if env.get("LIBVIRT_URI") else "LIBVIRT_DEFAULT_URI"
        for key, source in (("connect", "--connect"), ("env_uri", env_source)):
            if isinstance(values.get(key), str):
                checked_uri(str(values[key]), source)  # refused before anything runs
        check_pool(str(values["pool"]), values["pool_path"])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]

    def uri_for(self, machine: Machine | None) -> str:
        if self.connect:
            return self.connect
        if machine is not None and machine.libvirt_uri:
            return machine.libvirt_uri
        return self.env_uri or DEFAULT_URI

    @cached_property
    def nix_account(self) -> Account | None:
        """Who Nix runs as: the project's owner when ivm is root in someone else's tree."""
        root = self.root or find_root(Path.cwd())
        if root is None and self.flake and Path(self.flake).is_dir():
            root = Path(self.flake)
        return owner_account(root) if root is not None else None

    def pool_path_for(self, uri: str) -> str:
        return self.pool_path or default_pool_path(uri, self.pool)

    @cached_property
    def project_root(self) -> Path:
        root = self.root or find_root(Path.cwd())
        if root is None and self.machines_file is not None:
            # Without Nix there is no flake.nix: the project is the folder holding machines.json.
            root = self.machines_file.resolve().parent
        if root is None:
            raise UsageError(
                "no project found: no flake.nix in this directory or above, and no machines file",
                "run ivm inside the project, or pass --root DIR (the folder holding machines/)",
            )
        return root

    @cached_property
    def machines(self) -> Mapping[str, Machine]:
        if self.machines_file is None:
            raise UsageError(
                "no machines file given",
                "pass --machines FILE or set IVM_MACHINES (the flake apps do this for you)",
            )
        return load_machines(self.machines_file)

    def machine(self, name: str) -> Machine:
        return get_machine(self.machines, name)

    def flake_ref(self) -> str:
        return self.flake or str(self.project_root)
