"""The `ivm` command line: parse, call the core, print. Errors are caught once, in the group."""

from ivm.cli import completion, fleet, pool, vm  # noqa: F401 -- importing registers the commands
from ivm.cli.group import cli


def main() -> None:
    """Entry point of the `ivm` console script."""
    cli.main(prog_name="ivm")


__all__ = ["cli", "main"]
