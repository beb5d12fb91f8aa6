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
    """The folded copy and, when some character folded to more or fewer than one, the
    original index of each folded character (``None`` means positions are unchanged).
    A named tuple: made once per call, so it is cheaper than a frozen dataclass."""

    text: str
    origin: list[int] | None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of folded ``[start, end)``: from the first character's source
        to just past the last one's, so anything removed in between is covered."""
        if self.origin is None:
            return start, end
        return self.origin[start], self.origin[end - 1] + 1


def fold(text: str) -> Folded:
    """Fold ``text`` for matching (see the module's docstring)."""
    if text.isascii():
        return Folded(text, None)
    changed = {c for c in set(_NON_ASCII.findall(text)) if _FOLD[c] != c}
    if not changed:  # accented letters and the like: nothing to fold
        return Folded(text, None)
    # Only the few non-ASCII characters are replaced (str.translate would call back into a
    # mapping for every character of the text).
    folded = _NON_ASCII.sub(lambda m: _FOLD[m.group()], text)
    if all(len(_FOLD[c]) == 1 for c in changed):
        return Folded(folded, None)
    # Some character folded to none or several: 1:1 ranges between those characters.
    index: list[int] = []
    done = 0
    for m in _NON_ASCII.finditer(text):
        i = m.start()
        width = len(_FOLD[m.group()])
        if width != 1:
            index.extend(range(done, i))
            index.extend([i] * width)
            done = i + 1
    index.extend(range(done, len(text)))
    return Folded(folded, index)


def unconfuse(text: str) -> str:
    """``text`` with each digit look-alike between two digits read as that digit (one
    character for one, so offsets do not move)."""
    return _BETWEEN_DIGITS.sub(lambda m: m.group()[0] + LOOKALIKE_DIGITS[m.group()[1]], text)
