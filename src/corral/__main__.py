"""`python -m corral`: the CLI."""

from corral.cli import main

main()
