"""The scan behind ``find_pii``: where to look in the folded text, and what to try there.

One pass of ``TRIGGER`` stops at each digit run that could start a value and at each ``@``,
``:`` and ``.`` that could be inside one. From each stop the candidate starts follow
cheaply: a digit run may begin a number, end the letters of an IBAN or a licence
(``GB82...``, ``F1628...``), or follow the ``+`` or ``(`` of a phone number; an ``@`` ends
an e-mail's local part, read backwards; a ``:`` may be inside an IPv6 address or after a
URL's scheme; a ``.`` may be inside a host name or after ``www``. Only the shapes that can
begin there are tried, anchored (a run of seven digits starts no IP address, a '.' after
five digits no SSN), and the best validated reading wins: higher score, then longer.

A letter that looks like a digit right after a digit run and before another digit (``67O9``)
sends the scan back to the start over the text with such letters read as digits (see
``pii_text.unconfuse``): checked here, per digit run, it costs nothing on the texts without.

Findings never overlap. A reading that starts before the end of the previous finding is
kept only if it contains that finding, which it then replaces: ``5551234@example.com`` is
an e-mail address, not a phone number followed by text.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable

from corral.guards.pii_classify import BEST_SCORE, READERS, REPORT, Around, Reading
from corral.guards.pii_patterns import SHAPE, TRIGGER
from corral.guards.pii_text import LOOKALIKE_DIGITS, unconfuse

Hit = tuple[str, int, int, float]  # entity, start, end, score; offsets into the folded text
Reader = Callable[[re.Match[str], Around], list[Reading]]
Shapes = tuple[tuple[re.Pattern[str], Reader, float], ...]
Place = tuple[int, Shapes]


def _shapes(*names: str) -> Shapes:
    return tuple((SHAPE[name], READERS[name], BEST_SCORE[name]) for name in names)


_AT_DIGIT = ("ipv6", "ipv4", "nanp_phone", "ssn", "card", "grouped", "digits", "licence")
_AFTER_SIGN = _shapes("intl_phone", "nanp_phone", "grouped")
_AFTER_LETTERS = _shapes("iban", "licence")
_AFTER_LETTER = _shapes("licence")
_EMAIL = _shapes("email")
_URL = _shapes("url")
_DOMAIN = _shapes("domain")
_IPV6 = _shapes("ipv6")

_DIGITS = frozenset(string.digits)
_ALPHA = frozenset(string.ascii_letters)
# A digit right after one of these is inside a larger token: no number starts there (the
# shapes' own look-behinds say so too; checked here first, it saves trying them).
_GLUED = frozenset(string.ascii_letters + string.digits + "_.@/+-")
_LOCAL = frozenset(string.ascii_letters + string.digits + "._%+-")
_HOST = frozenset(string.ascii_letters + string.digits + ".-")
_HEX = frozenset(string.hexdigits)
_SEPARATORS = frozenset(" -.:/")
_NEXT_GROUP = frozenset(string.digits + "(")


def scan(text: str) -> list[Hit]:
    """Non-overlapping findings in ``text`` (already folded), in order."""
    hits: list[Hit] = []
    pos = 0
    for m in TRIGGER.finditer(text):
        i, run_end = m.span()
        if i < pos:  # inside the last finding
            continue
        ch = text[i]
        if "0" <= ch <= "9":
            after = text[run_end : run_end + 1]
            if after in LOOKALIKE_DIGITS and text[run_end + 1 : run_end + 2] in _DIGITS:
                return scan(unconfuse(text))
            places = _digit_places(text, i, run_end, after)
        else:
            places = _sign_places(text, i)
        best: Hit | None = None
        floor = hits[-1][2] if hits else 0
        for start, shapes in places:
            reading = _best_reading(text, start, shapes)
            if reading is None:
                continue
            entity, end, score = reading
            if start < floor and not (start <= hits[-1][1] and end >= floor):
                continue
            if best is None or (score, end - start) > (best[3], best[2] - best[1]):
                best = (entity, start, end, score)
        if best is None:
            continue
        while hits and best[1] < hits[-1][2]:
            hits.pop()
        hits.append(best)
        pos = best[2]
    return hits


def _sign_places(text: str, i: int) -> list[Place]:
    """Starts for an '@', ':' or '.' trigger."""
    ch = text[i]
    if ch == "@":
        start = _back(text, i, _LOCAL, 64)
        return [(start, _EMAIL)] if start < i else []
    places: list[Place] = []
    if ch == ":":
        if text.startswith("//", i + 1):
            places.append((_back(text, i, _ALPHA, 10), _URL))
        if text[i + 1] != "/":
            places.append((_back(text, i, _HEX, 4), _IPV6))
        return places
    if i >= 3 and text[i - 3 : i].lower() == "www":
        places.append((i - 3, _URL))
    start = _back(text, i, _HOST, 253)
    if start < i:
        places.append((start, _DOMAIN))
    return places


def _digit_places(text: str, i: int, end: int, after: str) -> list[Place]:
    """Starts for the digit run ``text[i:end]``, which ``after`` follows."""
    before = text[i - 1] if i else " "
    places: list[Place] = []
    if before in _ALPHA:
        if i >= 2 and text[i - 2] in _ALPHA:
            places.append((i - 2, _AFTER_LETTERS))
        else:
            places.append((i - 1, _AFTER_LETTER))
    elif before in "+(":
        places.append((i - 1, _AFTER_SIGN))
    if before not in _GLUED:
        if after in _SEPARATORS:
            if after != ":" and text[end + 1 : end + 2] not in _NEXT_GROUP:
                after = "!"  # a separator no further group follows: the number ends here
        elif after in _ALPHA:
            after = "h" if after in _HEX else "a"
        else:
            after = "?"
        shapes = _AT_DIGIT_BY.get((min(end - i, 20), after))
        if shapes:
            places.append((i, shapes))
    return places


def _shapes_at_digits(run: int, after: str) -> Shapes:
    """The shapes that can start at a run of ``run`` digits followed by ``after``: a
    separator that another group follows, "!" for a separator that ends the number, "h"
    for a hex letter, "a" for another letter, "?" for anything else. Each shape's first
    group has known lengths and a known character after it, so most need not be tried (a
    street number followed by a name, none)."""
    names: set[str] = set()
    if run <= 4 and after in (":", "h"):  # a hex letter may continue the group
        names.add("ipv6")
    if run <= 3 and after == ".":
        names.add("ipv4")
    if after in " -.":
        if run in (1, 3):
            names.add("nanp_phone")
        if run == 3:
            names.add("ssn")
        if run == 4:
            names.add("card")
        if run <= 5:
            names.add("grouped")
    if run >= 7:
        names.add("digits")
    if after in ("h", "a") and (run <= 3 or 7 <= run <= 9):
        names.add("licence")
    return _shapes(*(name for name in _AT_DIGIT if name in names))


_AT_DIGIT_BY: dict[tuple[int, str], Shapes] = {
    (run, after): _shapes_at_digits(run, after)
    for run in range(1, 21)
    for after in (*_SEPARATORS, "!", "h", "a", "?")
}


def _back(text: str, i: int, chars: frozenset[str], limit: int) -> int:
    """The start of the run of ``chars`` that ends just before ``i`` (at most ``limit``)."""
    start = i
    low = max(0, i - limit)
    while start > low and text[start - 1] in chars:
        start -= 1
    return start


def _best_reading(text: str, start: int, shapes: Shapes) -> Reading | None:
    around: Around | None = None
    best: Reading | None = None
    for shape, read, ceiling in shapes:
        if best is not None and ceiling < best[2]:
            continue  # this shape cannot beat the reading in hand ("SSN 460-89-9847")
        m = shape.match(text, start)
        if m is None:
            continue
        if around is None:
            around = Around(text, start)
        for reading in read(m, around):
            if reading[2] >= REPORT and (
                best is None or (reading[2], reading[1]) > (best[2], best[1])
            ):
                best = reading
    return best
