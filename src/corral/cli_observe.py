"""`corral graph` and `corral report`: what the store recorded, seen whole."""

from __future__ import annotations

import typer


def graph() -> None:
    """The agent dependency graph (being built in this change)."""
    raise typer.Exit(2)


def report() -> None:
    """Per agent type figures over a window (being built in this change)."""
    raise typer.Exit(2)
