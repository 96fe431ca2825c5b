"""`ivm completion SHELL`: the script that makes bash, zsh or fish complete ivm's commands,
options and machine names (click's completion, driven by the _IVM_COMPLETE variable)."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from ivm.cli.group import cli

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_IVM_COMPLETE"


@cli.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script for SHELL; it completes commands, options and machine names
    (from --machines/IVM_MACHINES, else the project's machines/ folders).

    \b
    bash: eval "$(ivm completion bash)"    in ~/.bashrc
    zsh:  eval "$(ivm completion zsh)"     in ~/.zshrc (after compinit)
    fish: ivm completion fish > ~/.config/fish/completions/ivm.fish
    """
    cls = get_completion_class(shell)
    if cls is None:  # click knows all three; kept so a future click without one says so plainly
        raise click.UsageError(f"no completion for {shell}")
    click.echo(cls(cli, {}, "ivm", COMPLETE_VAR).source(), nl=False)
