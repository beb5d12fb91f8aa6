"""Tables the CLI and the demo print: they must read at 80 columns, at 3 am.

An id (a run's, an approval's, a dead letter's, a key's) is what the next command
needs, so it is always printed whole, on one line, never cut short with an ellipsis.
Every other column gives way instead: it wraps, between words where it can (a word too
long for it folds onto the next line, no character lost), and the columns a listing can
spare go first.
"""

from __future__ import annotations

import textwrap
from collections.abc import Collection, Mapping, Sequence

from rich import box
from rich.table import Table

# What a column costs beside its text: the padding on both sides and the divider (the
# table's two edges make up for the padding its outer columns do without).
_GUTTER = 3
# The least a free-text column (a task, an error) is given before a spare column goes,
# and the least it is squeezed to, when none is left, before the short columns wrap too.
MIN_TEXT = 12
LEAST_TEXT = 8


def listing(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    width: int,
    *,
    ids: Collection[str] = (),
    text: str | None = None,
    droppable: Sequence[str] = (),
) -> Table:
    """A table for a terminal `width` columns wide.

    The `ids` columns are as wide as their widest value and never wrap. The free-text
    column `text` (a task, say) gives way first: if it would get fewer than MIN_TEXT
    characters, the `droppable` columns go, in order, until it gets them, and if it still
    would, it is squeezed down to LEAST_TEXT. Only then do the other columns wrap, the
    widest first, each kept as wide as its longest word while the ids leave room for it.
    """
    unknown = {*ids, *droppable, *([] if text is None else [text])} - set(columns)
    if unknown:
        raise ValueError(f"not columns of the table: {', '.join(sorted(unknown))}")
    natural = {
        column: max([len(column), *(len(row[i]) for row in rows)])
        for i, column in enumerate(columns)
    }
    shown = list(columns)

    def room() -> int:
        """What the text column would get with every other column at its full width."""
        fixed = sum(natural[c] for c in shown if c != text)
        return width - fixed - _GUTTER * len(shown) + 1

    for column in droppable:
        if room() >= (0 if text is None else min(MIN_TEXT, natural[text])):
            break
        shown.remove(column)
    at = [columns.index(column) for column in shown]
    kept = [[row[i] for i in at] for row in rows]
    limits = _limits(shown, kept, natural, width - _GUTTER * len(shown) + 1, ids, text)
    wraps = any(
        len(value) > limits.get(column, len(value))
        for row in kept
        for column, value in zip(shown, row, strict=True)
    )
    # A row on several lines is told from the next by a blank line between them.
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, leading=1 if wraps else 0)
    for column in shown:
        if column in ids:
            table.add_column(column, no_wrap=True, min_width=natural[column])
        else:
            table.add_column(column, overflow="fold", max_width=limits.get(column))
    for row in kept:
        table.add_row(*row)
    return table


def _limits(
    shown: Sequence[str],
    rows: Sequence[Sequence[str]],
    natural: Mapping[str, int],
    space: int,
    ids: Collection[str],
    text: str | None,
) -> dict[str, int]:
    """The widths the wrapping columns are held to so the table fits in `space` (the
    terminal less the gutters): none if it fits as it is.

    The text column gives way first, down to MIN_TEXT; then the others, widest first, each
    down to its longest word (a status, a date); then the text column, down to LEAST_TEXT.
    If that is still too wide, Rich narrows the wrapping columns further."""
    if sum(natural[c] for c in shown) <= space:
        return {}
    others = [c for c in shown if c not in ids and c != text]
    left = space - sum(natural[c] for c in shown if c in ids)
    floor = {
        c: min(natural[c], _longest_word(c, [row[shown.index(c)] for row in rows])) for c in others
    }
    if text is None or text not in shown:
        return _lowered(others, natural, floor, left)
    full = sum(natural[c] for c in others)
    want = min(MIN_TEXT, natural[text])
    if left - full >= want:
        return {text: min(natural[text], left - full)}
    limits = _lowered(others, natural, floor, left - want)
    # A column held under its width may wrap narrower than that: the text gets the rest.
    for c, limit in limits.items():
        if limit < natural[c]:
            limits[c] = _wrapped([c, *(row[shown.index(c)] for row in rows)], limit)
    least = min(LEAST_TEXT, natural[text])
    limits[text] = max(least, min(natural[text], left - sum(limits.values())))
    return limits


def _lowered(
    columns: Sequence[str], natural: Mapping[str, int], floor: Mapping[str, int], room: int
) -> dict[str, int]:
    """The columns' widths under a ceiling lowered until they fit in `room`, none below
    its floor (all at their floors if even those do not fit)."""
    ceiling = max((natural[c] for c in columns), default=0)

    def widths(at: int) -> dict[str, int]:
        return {c: max(floor[c], min(natural[c], at)) for c in columns}

    while ceiling > 0 and sum(widths(ceiling).values()) > room:
        ceiling -= 1
    return widths(ceiling)


def _wrapped(values: Sequence[str], limit: int) -> int:
    """How wide values wrapped between words at `limit` come out (no wider than it)."""
    lines = (
        line
        for value in values
        for line in textwrap.wrap(value, limit, break_on_hyphens=False) or [""]
    )
    return max((len(line) for line in lines), default=0)


def _longest_word(header: str, values: Sequence[str]) -> int:
    return max(len(word) for value in (header, *values) for word in [*value.split(), ""])
