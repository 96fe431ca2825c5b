"""`python -m ivm` runs the command-line tool."""

from ivm.cli import main

main()
