"""The `ivm` command line: parse, call the core, print. Errors are caught once, in the group."""

from ivm.cli.group import cli  # the commands are imported when named (ivm/cli/commands.py)


def main() -> None:
    """Entry point of the `ivm` console script."""
    cli.main(prog_name="ivm")


__all__ = ["cli", "main"]
