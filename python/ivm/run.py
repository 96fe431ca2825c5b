"""The one door for subprocesses: logs `+ cmd` at debug level, turns failures into ToolError."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from ivm.errors import ToolError
from ivm.privilege import Account

log = logging.getLogger("ivm.run")

# Debian installs e2fsprogs tools in /usr/sbin, which is not on a non-root user's PATH.
_EXTRA_DIRS = ("/usr/sbin", "/sbin")


def find_tool(name: str, package: str, extra_dirs: Sequence[str] = ()) -> str:
    """Path of an external tool, or an error naming the package that provides it."""
    found = shutil.which(name)
    if found is None:
        for d in (*_EXTRA_DIRS, *extra_dirs):
            candidate = Path(d) / name
            if candidate.is_file():
                return str(candidate)
        raise ToolError(f"{name} was not found on PATH", f"install {package}")
    return found


def run(
    argv: Sequence[str],
    *,
    package: str,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    what: str | None = None,
    as_user: Account | None = None,
) -> str:
    """Run argv[0] (looked up on PATH), return its stdout; raise ToolError with its stderr tail.

    With `as_user` (ivm is root), the command runs as that user, with that user's HOME and groups.
    """
    exe = find_tool(argv[0], package, as_user.search_path() if as_user else ())
    cmd = [exe, *argv[1:]]
    log.debug("+ %s%s", f"(as {as_user.name}) " if as_user else "", shlex.join(argv))
    if as_user is not None:
        env = as_user.environment(os.environ if env is None else env)
    try:
        proc = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            env=env,
            cwd=cwd,
            check=False,
            user=as_user.uid if as_user else None,
            group=as_user.gid if as_user else None,
            extra_groups=list(as_user.groups) if as_user else None,
        )
    except OSError as e:
        raise ToolError(f"cannot run {argv[0]}: {e.strerror}", f"check that {package} works") from None
    stderr = proc.stderr.decode(errors="replace").strip()
    if stderr:
        log.debug("%s stderr: %s", argv[0], stderr)
    if proc.returncode != 0:
        tail = stderr.splitlines()[-1] if stderr else f"exit status {proc.returncode}"
        raise ToolError(f"{what or argv[0]} failed: {tail}")
    return proc.stdout.decode(errors="replace")
