"""Deterministic stop points for crash tests: `failpoint("create:after-base-import")` does nothing
unless the environment names that point.

- `IVM_FAILPOINT=NAME` kills the process with SIGKILL when it reaches NAME: no cleanup, no
  `finally`, no flushing, as a power cut or the OOM killer would.
- With `IVM_FAILPOINT_PAUSE=FILE` as well, the process writes its pid to FILE and stops itself
  (SIGSTOP) instead, the first time only: the test decides what happens next (SIGCONT or SIGKILL).
  That makes races deterministic: a run can be frozen while it holds a lock. (A fleet command
  passes a point once per VM; pausing again would wait for a SIGCONT nobody sends.)

Unset (always, outside tests), a failpoint costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

ENV = "IVM_FAILPOINT"
PAUSE_ENV = "IVM_FAILPOINT_PAUSE"
_paused: set[str] = set()


def failpoint(name: str) -> None:
    """Stop here if the environment asks for this point; otherwise return at once."""
    if os.environ.get(ENV) != name:
        return
    pause = os.environ.get(PAUSE_ENV)
    if pause:
        if name in _paused:
            return
        _paused.add(name)
        # Written then renamed, so a waiting test never reads half a pid.
        tmp = Path(f"{pause}.tmp")
        tmp.write_text(f"{os.getpid()}\n")
        tmp.rename(pause)
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    os.kill(os.getpid(), signal.SIGKILL)
