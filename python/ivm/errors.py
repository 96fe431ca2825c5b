"""The one error type users see: a one-line message, a hint on what to do, an exit code."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """Exit codes shared by every command."""

    OK = 0
    FAILED = 1  # the operation was attempted and did not succeed
    USAGE = 2  # the request itself is invalid: bad name, bad file, unknown machine


class ToolError(Exception):
    """A failure the user can act on; the CLI prints it once and exits with its code."""

    def __init__(self, message: str, hint: str | None = None, exit_code: Exit = Exit.FAILED):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(ToolError):
    """Invalid input: exits with 2 and changes nothing."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint, Exit.USAGE)
