"""Tables the CLI and the demo print: they must read at 80 columns, at 3 am."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.table import Table

# What a column costs beside its text: padding on both sides and the divider.
_GUTTER = 3
_MIN_TASK = 12


def run_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    width: int,
    *,
    droppable: Sequence[str] = (),
) -> Table:
    """A table with one line per row in `width` columns. Every column is as wide as its
    widest value (ids are what the next command needs, whole) but "task", which gets what
    is left, cut short; if that is too little, the `droppable` columns go, in order."""
    widths = {
        column: max([len(column), *(len(row[i]) for row in rows)])
        for i, column in enumerate(columns)
    }
    shown = list(columns)

    def room() -> int:
        fixed = sum(widths[c] for c in shown if c != "task")
        return width - fixed - _GUTTER * len(shown)

    for column in droppable:
        if room() >= _MIN_TASK:
            break
        shown.remove(column)
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for column in shown:
        if column == "task":
            limit = max(_MIN_TASK, room())
            table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=limit)
        else:
            table.add_column(column, no_wrap=True, min_width=widths[column])
    at = [columns.index(column) for column in shown]
    for row in rows:
        table.add_row(*(row[i] for i in at))
    return table
