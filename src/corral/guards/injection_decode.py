"""The readings of a text that the injection rules match, and the way back to its offsets.

An attacker who knows a filter looks for "ignore previous instructions" writes it so the
filter's regex no longer sees it while a model still reads it: Cyrillic, fullwidth or
small-capital look-alike letters (``іgnore``), zero-width characters inside words,
invisible Unicode tag characters, leetspeak (``1gn0r3``), letters spaced out
(``i g n o r e``), the text reversed, or a base64 blob the model is asked to decode. Each
trick gets its own reading here, built only when the text shows a sign of it, so ordinary
ASCII text costs an ``isascii`` and a word split.

Every reading keeps a map to the original's character offsets, so a rule that matches in
a reading names the span the caller can show. The maps are piecewise: runs of characters
that stand one for one, with dropped characters (zero-width, separators) between them.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

# Characters a reader does not see. Soft hyphens and bidi controls are dropped from the
# reading as well, but only the first group inside a word is a sign of tampering: typeset
# pages put soft hyphens in long words, and mixed-script text needs bidi marks.
_HIDDEN = "\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u180e\u034f"
_BIDI = "\u00ad\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_TAGS = "\U000e0000-\U000e007f"
_DROPPED_RE = re.compile(f"[{_HIDDEN}{_BIDI}{_TAGS}]+")
_DROPPED_CHARS = frozenset(_HIDDEN + _BIDI) | frozenset(map(chr, range(0xE0000, 0xE0080)))
_ASCII_BYTES = bytes(range(128))
_SPLIT_WORD_RE = re.compile(f"[A-Za-z][{_HIDDEN}]+[A-Za-z]")

# Unicode tag characters mirror printable ASCII and render as nothing: "ASCII smuggling"
# hides a whole instruction in them (flag emoji use a few, never a run of words).
_TAG_RUN_RE = re.compile("[\U000e0020-\U000e007e]{4,}")

# Cyrillic and Greek letters drawn like Latin ones, which NFKC leaves alone.
_LOOKALIKES = {
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i",
    "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ɡ": "g", "ɑ": "a",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "Ԁ": "D",
    "α": "a", "ο": "o", "ν": "v", "ρ": "p", "τ": "t", "υ": "u", "ι": "i", "κ": "k",
    "ϲ": "c", "ϳ": "j", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I",
    "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
}  # fmt: skip

# Accented Latin letters fold to their base letter too (so "ïgnörë" reads "ignore"), but
# accents are ordinary in most languages: only look-alikes above count as disguise.
_ACCENTED = ((0x00C0, 0x024F), (0x1E00, 0x1EFF))
# Letterlike symbols, circled letters, fullwidth forms and mathematical alphabets, which
# NFKD maps to one ASCII letter or digit.
_COMPAT = ((0x2100, 0x214F), (0x2460, 0x24FF), (0xFF01, 0xFF5E), (0x1D400, 0x1D7FF))


def _fold_table() -> tuple[dict[int, str], frozenset[int]]:
    table = {ord(k): v for k, v in _LOOKALIKES.items()}
    for low, high in _ACCENTED:
        for code in range(low, high + 1):
            base = unicodedata.normalize("NFKD", chr(code))[:1]
            if base.isascii() and base.isalpha():
                table[code] = base
    disguise = set(table) - {c for low, high in _ACCENTED for c in range(low, high + 1)}
    for low, high in _COMPAT:
        for code in range(low, high + 1):
            folded = unicodedata.normalize("NFKD", chr(code))
            if len(folded) == 1 and folded.isascii() and folded.isalnum():
                table[code] = folded
                disguise.add(code)
    for code in range(0x1D00, 0x1D2C):  # small capitals: no decomposition, only a name
        name = unicodedata.name(chr(code), "")
        if name.startswith("LATIN LETTER SMALL CAPITAL ") and len(name) == 28:
            table[code] = name[-1].lower()
            disguise.add(code)
    return table, frozenset(disguise)


def _char_class(codes: Iterable[int]) -> re.Pattern[str]:
    """A character class of ``codes`` written as ranges: sre scans a class of single
    characters beyond the BMP one by one, a short list of ranges fast."""
    ranges: list[list[int]] = []
    for code in sorted(codes):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    body = "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )
    return re.compile(f"[{body}]")


_FOLD, _DISGUISE = _fold_table()
_DISGUISE_RE = _char_class(_DISGUISE)

_LEET = str.maketrans("013457@$", "oieastas")
_LEET_L = str.maketrans("013457@$", "oleastas")
_LEET_WORD_RE = re.compile(r"(?<![\w@$])(?=[\w@$]*[a-z])(?=[\w@$]*[0-9@$])[\w@$]{3,}", re.I)

# Four or more single letters with one to three separators between each: "i g n o r e",
# "I.G.N.O.R.E", "i-g-n-o-r-e".
_SPACED_RE = re.compile(r"(?<![A-Za-z])(?:[A-Za-z][ .\-_*+|/\\~]{1,3}){3,}[A-Za-z](?![A-Za-z])")
_NON_LETTERS_RE = re.compile(r"[^A-Za-z]+")

_B64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-")
_B64_SHAPE = bytes(ord("x") if c in _B64_CHARS else 32 for c in range(256))
_B64_RUN = b"x" * 16
_B64_MAX_BLOBS = 16
_B64_MAX_LEN = 16384


class OffsetMap:
    """Maps positions of a reading to positions of the text it was read from.

    ``starts`` are the reading positions where a one-for-one run begins, ``origins`` the
    source positions of those run starts; what lies between runs was dropped."""

    __slots__ = ("origins", "starts")

    def __init__(self, starts: list[int], origins: list[int]) -> None:
        self.starts = starts
        self.origins = origins

    def at(self, position: int) -> int:
        run = bisect_right(self.starts, position) - 1
        return self.origins[run] + position - self.starts[run]

    def span(self, start: int, end: int) -> tuple[int, int]:
        if end <= start:
            point = self.at(start)
            return point, point
        return self.at(start), self.at(end - 1) + 1

    def through(self, outer: OffsetMap | None) -> OffsetMap:
        """This map followed by ``outer`` (which maps the source on to its own source):
        runs are split where ``outer`` has a gap, so the result stays exact."""
        if outer is None:
            return self
        starts: list[int] = []
        origins: list[int] = []
        for index, start in enumerate(self.starts):
            origin = self.origins[index]
            end = self.starts[index + 1] if index + 1 < len(self.starts) else None
            stop = None if end is None else origin + end - start
            starts.append(start)
            origins.append(outer.at(origin))
            run = bisect_right(outer.starts, origin)
            while run < len(outer.starts) and (stop is None or outer.starts[run] < stop):
                starts.append(start + outer.starts[run] - origin)
                origins.append(outer.origins[run])
                run += 1
        return OffsetMap(starts, origins)


@dataclass(frozen=True, slots=True)
class Reading:
    """A text as a rule reads it. ``offsets`` maps its spans to the original (``None``:
    position for position); a ``mirrored`` reading runs backwards."""

    text: str
    offsets: OffsetMap | None = None
    mirrored: bool = False

    def origin(self, start: int, end: int) -> tuple[int, int]:
        if self.mirrored:
            size = len(self.text)
            start, end = size - end, size - start
        if self.offsets is None:
            return start, end
        return self.offsets.span(start, end)


def _dropping(text: str, pattern: re.Pattern[str]) -> tuple[str, OffsetMap | None]:
    """The text without what ``pattern`` matches, and the map back (``None``: no drop)."""
    pieces: list[str] = []
    starts: list[int] = []
    origins: list[int] = []
    kept = last = 0
    dropped = False
    for match in pattern.finditer(text):
        dropped = True
        if match.start() > last:
            starts.append(kept)
            origins.append(last)
            pieces.append(text[last : match.start()])
            kept += match.start() - last
        last = match.end()
    if not dropped:
        return text, None
    starts.append(kept)
    origins.append(last)
    pieces.append(text[last:])
    return "".join(pieces), OffsetMap(starts, origins)


def clean(text: str) -> tuple[Reading, str]:
    """The primary reading (look-alikes folded to ASCII, invisible characters dropped),
    and any text smuggled in Unicode tag characters. ASCII text comes back as it is.

    The distinct non-ASCII characters are found with a byte-level delete of the ASCII
    bytes (a regex or ``str.translate`` costs ten times more), then each foldable one is
    replaced: one character for one, so offsets stay."""
    if text.isascii():
        return Reading(text), ""
    data = text.encode("utf-8", "surrogatepass").translate(None, _ASCII_BYTES)
    present = set(data.decode("utf-8", "surrogatepass"))
    smuggled = ""
    if any(0xE0020 <= ord(c) <= 0xE007E for c in present):
        smuggled = " ".join(
            "".join(chr(ord(c) - 0xE0000) for c in run.group(0))
            for run in _TAG_RUN_RE.finditer(text)
        )
    folded = text
    for char in present:
        replacement = _FOLD.get(ord(char))
        if replacement is not None:
            folded = folded.replace(char, replacement)
    if present.isdisjoint(_DROPPED_CHARS):
        return Reading(folded), smuggled
    dropped, offsets = _dropping(folded, _DROPPED_RE)
    return Reading(dropped, offsets), smuggled


def disguised(text: str, start: int, end: int) -> bool:
    """Whether the original span holds look-alike letters a reader takes for ASCII."""
    return not text.isascii() and _DISGUISE_RE.search(text, start, end) is not None


def hidden(text: str, start: int, end: int) -> bool:
    """Whether the original span has zero-width characters inside a word."""
    return (
        not text.isascii() and _SPLIT_WORD_RE.search(text, max(0, start - 1), end + 1) is not None
    )


def leet_readings(primary: Reading) -> list[Reading]:
    """Leetspeak decoded in the words that mix letters with digits or ``@``/``$`` (other
    words, numbers and prices, stay as they are), with ``1`` read as ``i`` and, if there
    is a ``1``, again as ``l``. Empty when fewer than two words look like leetspeak."""
    words = list(_LEET_WORD_RE.finditer(primary.text))
    if len(words) < 2:
        return []
    tables = [_LEET, _LEET_L] if any("1" in w.group(0) for w in words) else [_LEET]
    readings = []
    for table in tables:
        pieces = []
        last = 0
        for word in words:
            pieces.append(primary.text[last : word.start()])
            pieces.append(word.group(0).translate(table))
            last = word.end()
        pieces.append(primary.text[last:])
        readings.append(Reading("".join(pieces), primary.offsets))
    return readings


def spaced_runs(primary: Reading) -> list[tuple[int, int]]:
    """Where the text spells words one separated letter at a time (reading offsets)."""
    return [m.span() for m in _SPACED_RE.finditer(primary.text)]


def squashed(primary: Reading) -> Reading:
    """The letters of the text and nothing else, lower-cased: a spaced-out or punctuated
    spelling reads as the word it spells. Rules that read it must be whole phrases."""
    letters, offsets = _dropping(primary.text, _NON_LETTERS_RE)
    if offsets is None:
        return Reading(letters.lower(), primary.offsets)
    return Reading(letters.lower(), offsets.through(primary.offsets))


def reversed_reading(primary: Reading) -> Reading:
    """The text backwards: an instruction written in reverse reads forwards here."""
    return Reading(primary.text[::-1], primary.offsets, mirrored=True)


def _prose(data: bytes) -> str | None:
    """Decoded bytes as text, if they read as words rather than binary, JSON or keys."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) < 8 or text.count(" ") < 2:
        return None
    plain = sum(1 for c in text if c.isalpha() or c in " ,.'!?:;\n-")
    return text if plain >= 0.85 * len(text) else None


def base64_payloads(primary: Reading, data: bytes) -> list[tuple[tuple[int, int], str]]:
    """Base64 blobs that decode to prose: each blob's span (reading offsets) and its text.

    ``data`` is the lower-cased reading as bytes (``ascii_bytes``): its runs of 16 base64
    characters or more are found with a translate and ``bytes.find`` (C speed; a regex
    costs ten times more), and read back in the reading's own case. A blob must mix
    cases (a long word or an upper-case header is not base64) and decode to mostly
    letters and spaces: images, keys, hashes and JWTs decode to bytes or JSON."""
    shape = data.translate(_B64_SHAPE)
    found: list[tuple[tuple[int, int], str]] = []
    seen: set[bytes] = set()
    start = shape.find(_B64_RUN)
    while start != -1 and len(found) < _B64_MAX_BLOBS:
        end = shape.find(b" ", start)
        end = len(shape) if end == -1 else end
        run = primary.text[start:end].encode("ascii", "replace")
        start = shape.find(_B64_RUN, end)
        if run in seen or run.islower() or run.isupper() or len(run) > _B64_MAX_LEN:
            continue
        seen.add(run)
        body = run.rstrip(b"=").replace(b"-", b"+").replace(b"_", b"/")
        body += b"=" * (-len(body) % 4)
        try:
            decoded = _prose(base64.b64decode(body, validate=True))
        except (binascii.Error, ValueError):
            continue
        if decoded is not None:
            at = end - len(run)
            found.append(((at, end), decoded))
    return found
