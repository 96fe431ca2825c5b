"""VM names are hostname labels; everything derived from them (volumes, domains, locks) relies on it."""

from __future__ import annotations

import re

from ivm.errors import UsageError

NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,62}")


def check_vm_name(name: str) -> str:
    """Return `name` if it is a valid VM name, else raise a usage error that says what is allowed."""
    if not NAME_RE.fullmatch(name) or name.endswith("-"):
        shown = name if name.isprintable() and len(name) <= 80 else repr(name[:80])
        raise UsageError(
            f"invalid VM name {shown!r}",
            "use 1-63 characters: a lowercase letter first, then lowercase letters, digits or '-', "
            "not ending in '-'",
        )
    return name
