"""The copy of a text that the PII patterns read, and the way back to the original's offsets.

The patterns are written for ASCII digits, dashes and spaces. Text that a user, a model or
an attacker writes may spell the same value with fullwidth digits (``４１１１``), Arabic-Indic
or other decimal digits, a non-breaking or thin space, an en dash or a minus sign, or hide
zero-width characters inside it so that a naive regex no longer sees one number. Matching on
the raw text would let such a value through; rewriting the text itself would break every
offset the caller holds. So the detector matches on a folded copy and maps each span back to
the characters of the original text, zero-width characters inside a value included.

The fold is per character: NFKC (fullwidth forms, ligatures, superscripts, circled and
mathematical digits, compatibility spaces), then any remaining decimal digit to its ASCII
digit, dash-like characters to ``-``, and the zero-width characters removed. Per character
rather than over the whole string because that keeps the map from folded to original
positions exact and cheap; it does not compose combining sequences, which none of the
patterns need. ``unconfuse`` goes one step further, for the scan to call when it meets a
letter that looks like a digit (Latin, Cyrillic or Greek O, l, I) between two digits: it
reads every such letter as that digit, so ``123-45-67O9`` is seen as the number it
imitates, while the same letters between other letters are left alone.
"""

from __future__ import annotations

import bisect
import functools
import re
import unicodedata
from typing import NamedTuple

_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff")
_DASHES = frozenset("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d")

# A digit look-alike between two digits: Latin, Cyrillic and Greek capital and small O;
# small l, capital I and the Cyrillic I. One-to-one, so the map of positions is unchanged.
LOOKALIKE_DIGITS = {
    "O": "0",
    "o": "0",
    "\u041e": "0",
    "\u043e": "0",
    "\u039f": "0",
    "\u03bf": "0",
    "l": "1",
    "I": "1",
    "\u0406": "1",
}
# Led by the digit (not a look-behind) so that the engine's fast skip to a digit applies.
_BETWEEN_DIGITS = re.compile("[0-9][" + "".join(LOOKALIKE_DIGITS) + "](?=[0-9])")


class _Fold(dict[str, str]):
    """The fold of each non-ASCII character, computed once per distinct character."""

    def __missing__(self, ch: str) -> str:
        out = _fold_char(ch)
        self[ch] = out
        return out


def _fold_char(ch: str) -> str:
    if ch in _ZERO_WIDTH:
        return ""
    if ch in _DASHES:
        return "-"
    out = unicodedata.normalize("NFKC", ch)
    if out in _DASHES:
        return "-"
    return "".join(_ascii_digit(c) for c in out)


def _ascii_digit(c: str) -> str:
    if c.isascii() or unicodedata.category(c) != "Nd":
        return c
    return str(unicodedata.decimal(c))


_FOLD = _Fold()
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


class Folded(NamedTuple):
    """The folded copy and, when some character folded to more or fewer than one, the way
    back: ``starts`` are the folded offsets where a run begins, ``runs`` the original
    offset each begins at and whether it steps with the folded one (1) or stays on one
    character that folded to several (0). ``None`` when positions are unchanged. A named
    tuple (made once per call, cheaper than a frozen dataclass), and runs rather than one
    offset per character, so a megabyte with one ligature in it does not cost a list of a
    million integers."""

    text: str
    starts: list[int] | None = None
    runs: list[tuple[int, int]] | None = None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of folded ``[start, end)``: from the first character's source
        to just past the last one's, so anything removed in between is covered."""
        if self.starts is None:
            return start, end
        return self._origin(start), self._origin(end - 1) + 1

    def _origin(self, pos: int) -> int:
        assert self.starts is not None and self.runs is not None
        k = bisect.bisect_right(self.starts, pos) - 1
        origin, step = self.runs[k]
        return origin + (pos - self.starts[k]) * step


@functools.lru_cache(maxsize=256)
def _any_of(chars: frozenset[str]) -> re.Pattern[str]:
    return re.compile("[" + re.escape("".join(sorted(chars))) + "]")


def fold(text: str) -> Folded:
    """Fold ``text`` for matching (see the module's docstring)."""
    if text.isascii():
        return Folded(text)
    changed = frozenset(c for c in set(_NON_ASCII.findall(text)) if _FOLD[c] != c)
    if not changed:  # accented letters and the like: nothing to fold
        return Folded(text)
    # Only the characters that change are replaced, by one pattern of just those (a
    # callback per non-ASCII character, or str.translate's lookup per character of the
    # text, costs several times more on a long text).
    folded = _any_of(changed).sub(lambda m: _FOLD[m.group()], text)
    resized = frozenset(c for c in changed if len(_FOLD[c]) != 1)
    if not resized:
        return Folded(folded)
    starts = [0]
    runs = [(0, 1)]
    shift = 0  # folded offset minus original offset so far
    for m in _any_of(resized).finditer(text):
        i = m.start()
        width = len(_FOLD[m.group()])
        if width:
            starts.append(i + shift)
            runs.append((i, 0))
        shift += width - 1
        starts.append(i + 1 + shift)
        runs.append((i + 1, 1))
    return Folded(folded, starts, runs)


def unconfuse(text: str) -> str:
    """``text`` with each digit look-alike between two digits read as that digit (one
    character for one, so offsets do not move)."""
    return _BETWEEN_DIGITS.sub(lambda m: m.group()[0] + LOOKALIKE_DIGITS[m.group()[1]], text)
