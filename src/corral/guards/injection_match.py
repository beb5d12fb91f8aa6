"""How an injection rule is written and matched: a phrase found at the words it starts with.

A regex searched over a whole text costs Python about 20 µs per KB, and the detector has
dozens of rules. So a rule names the words its phrase can start with, the text is split
into its set of words once (a byte translate and a split, a few µs per KB), and a rule
runs only where one of its words occurs, anchored there. Ordinary text, which holds few
of those words, touches few rules.

Rules match the lower-cased reading. Two checks run in Python, after a match:
``imperative`` rules fire only at the start of a sentence (after "please", "also" and the
like), because an instruction addressed to the reader is said that way; ``mention``
rules are weakened when the phrase is talked about rather than used ("models often
ignore previous instructions", "phrases such as 'ignore previous instructions'").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_WORD_TABLE = bytes(
    (c | 0x20) if (65 <= c <= 90 or 97 <= c <= 122) else 32 for c in range(256)
)  # fmt: skip

# What may stand between a sentence boundary and an imperative verb.
_LEAD_RE = re.compile(
    r"(?:(?:please|pls|kindly|also|now|then|and|so|just|simply|finally|first|next|"
    r"additionally|lastly|always|further(?:more)?|moreover|important|note|ps|p\.s\.|"
    r"don'?t\s+forget\s+to|remember\s+to|make\s+sure\s+(?:to|that\s+you|you)|"
    r"be\s+sure\s+to|ensure\s+(?:that\s+)?you|you\s+(?:must|should|need\s+to|have\s+to)|"
    r"to\s+proceed|in\s+addition)[\s,:!-]+)*\Z"
)
_BOUNDARY_CHARS = frozenset(".!?:;|\n>*•-)]\"'“”‘’(`#=")

# What before a phrase says it is being described or quoted, not given as an order.
_MENTION_RE = re.compile(
    r"(?:\b(?:models?|llms?|chatbots?|bots?|they|it|that|which|who|attackers?|users?|people|"
    r"often|sometimes|usually|can|could|may|might|would|cannot|can't|won't|doesn't|don't|"
    r"didn't|never|not|such\s+as|like|phrases?|words|saying|says|said|typing|containing|"
    r"e\.g\.,?|i\.e\.,?|called|as|stops?|starts?|begins?|tends?\s+to|tried\s+to|"
    r"(?:was|were|been|is|are|being|get|got)\s+(?:asked|told|instructed|tricked|prompted|made)"
    r"\s+to|(?:attempts?|attempted|trying|tries|refused|refuses|managed|failed)\s+to)\s*"
    r"[\"'“‘«`]?\s*)\Z"
)
MENTION_FACTOR = 0.35


def literals(text: str) -> list[str]:
    """A rule's start literals written as one string of words, as a rule table reads
    best; literals of several words are listed apart."""
    return text.split()


def ascii_bytes(text: str) -> bytes:
    """The text as one byte per character (non-ASCII ones as ``?``): byte-level splits
    and translates are several times faster than ``str`` ones, and offsets agree."""
    return text.encode("ascii", "replace")


def words_of(data: bytes) -> frozenset[bytes]:
    """The lower-cased ASCII words of a text's bytes (``ascii_bytes``)."""
    return frozenset(data.translate(_WORD_TABLE).split())


def lowered(text: str) -> str:
    """The text lower-cased position for position (``İ`` is the one letter whose lower
    case is two characters; it is read as ``i``)."""
    low = text.lower()
    return low if len(low) == len(text) else text.replace("İ", "I").lower()


def sentence_start(low: str, position: int) -> bool:
    """Whether ``position`` begins a sentence, possibly after lead words ("please")."""
    window = low[max(0, position - 80) : position]
    lead = _LEAD_RE.search(window)
    before = window[: lead.start() if lead else len(window)].rstrip(" \t\r")
    if not before:
        return position <= 80
    return before[-1] in _BOUNDARY_CHARS or before.endswith("\\n")


def sentence(low: str, start: int, end: int) -> tuple[int, int]:
    """The bounds of the sentence around ``start:end`` (at most 300 characters a side)."""
    lo = max(0, start - 300)
    head = low[lo:start]
    cut = max(head.rfind(". "), head.rfind("! "), head.rfind("? "), head.rfind("\n"),
              head.rfind("|"), head.rfind("\\n"))  # fmt: skip
    begin = lo + cut + 1 if cut >= 0 else lo
    if low.startswith("\\n", begin - 1):
        begin += 1
    while begin < start and low[begin].isspace():
        begin += 1
    tail = low[end : end + 300]
    stops = [i for i in (tail.find(". "), tail.find("! "), tail.find("? "), tail.find("\n"),
                         tail.find("\\n")) if i >= 0]  # fmt: skip
    finish = end + min(stops) + 1 if stops else min(len(low), end + 300)
    if tail.endswith(".") and not stops:
        finish = end + len(tail)
    return begin, finish


def mentioned(low: str, position: int) -> bool:
    """Whether the words before ``position`` describe or quote the phrase that starts
    there instead of saying it."""
    return _MENTION_RE.search(low, max(0, position - 40), position) is not None


Check = Callable[[str, str, "re.Match[str]"], float]


@dataclass(frozen=True, slots=True)
class Rule:
    """One phrase rule.

    ``starts`` are the lower-case literals the phrase can begin with (words, several
    words, or something like ``<|``); ``pattern`` is matched where one occurs (searched
    from ``back`` characters before it when the phrase may begin earlier). ``user`` and
    ``data`` are the rule's weight in a user turn and in a tool result or document.
    ``needs`` are words of which the text must hold one for the pattern to have a chance
    (what its object must be, say): a cheap test that spares the search. ``check``,
    given the original reading, the lower-cased one and the match, returns a factor for
    the weight (0 drops the hit)."""

    id: str
    starts: tuple[str, ...]
    pattern: re.Pattern[str]
    user: float
    data: float
    imperative: bool = False
    mention: bool = False
    back: int = 0
    needs: frozenset[bytes] = frozenset()
    check: Check | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    """A rule that fired: its id, its weight for the source, and where (reading offsets)."""

    rule: str
    weight: float
    start: int
    end: int


def rule(
    id: str,
    starts: Iterable[str],
    pattern: str,
    user: float,
    data: float,
    *,
    imperative: bool = False,
    mention: bool = False,
    back: int = 0,
    needs: str = "",
    check: Check | None = None,
) -> Rule:
    """A Rule with its pattern compiled (the text it reads is lower-cased already) and
    ``needs`` given as a string of words."""
    return Rule(
        id, tuple(starts), re.compile(pattern), user, data, imperative, mention, back,
        frozenset(word.encode() for word in needs.split()), check,
    )  # fmt: skip


_FIRST_WORD = re.compile(r"[a-z]+")
_FLAT = bytes.maketrans(b"\n\t\r", b"   ")
_NAMED_GROUP = re.compile(r"\(\?P<\w+>")


@dataclass(frozen=True, slots=True)
class _Literal:
    """A literal and the rules that start with it. ``first`` is its first word (None for
    a literal such as ``<|``), ``rest`` its other words; ``encoded`` its bytes as
    ``ascii_bytes`` writes them, so a non-ASCII literal is found as ``you?re`` and then
    checked in the string."""

    text: str
    encoded: bytes
    first: bytes | None
    rest: frozenset[bytes]
    always: tuple[tuple[int, Rule, float], ...]  # rules without ``needs``
    gated: tuple[tuple[int, Rule, float], ...]  # rules with ``needs``
    needs: frozenset[bytes]  # the words any of the gated rules needs
    gate: re.Pattern[str] | None


class RuleSet:
    """Rules indexed by the literals they start with, so that a text tries only what
    it can match.

    The text's words are a set (made once per text); a literal is looked for only when
    the text holds all its words, and only for the rules whose ``needs`` the text meets.
    It is found with ``bytes.find`` in the text's bytes (one byte per character: the
    fastest search CPython has, whatever the string's width), as written with single
    spaces (line breaks and tabs read as spaces), which keeps very common first words
    ("the", "you") from costing a Python step per occurrence. Where it occurs, its
    rules are tried behind one pattern that matches where any of them could."""

    def __init__(self, rules: Iterable[Rule], user: bool) -> None:
        grouped: dict[str, list[tuple[int, Rule, float]]] = {}
        for index, item in enumerate(rules):
            weight = item.user if user else item.data
            if weight > 0:
                for literal in item.starts:
                    grouped.setdefault(literal, []).append((index, item, weight))
        self._by_word: dict[bytes, list[_Literal]] = {}
        self._odd: list[_Literal] = []
        for literal, entries in grouped.items():
            words = [word.encode() for word in _FIRST_WORD.findall(literal)]
            first = words[0] if literal[0].isalpha() else None
            found = _Literal(
                literal, literal.encode("ascii", "replace"), first,
                frozenset(words[1:] if first else words),
                tuple(e for e in entries if not e[1].needs),
                tuple(e for e in entries if e[1].needs),
                frozenset().union(*(e[1].needs for e in entries)), _gate(entries),
            )  # fmt: skip
            if first is None:
                self._odd.append(found)
            else:
                self._by_word.setdefault(first, []).append(found)
        self._words = frozenset(self._by_word)
        self._heads = {word: _head(literals) for word, literals in self._by_word.items()}

    def match(self, text: str, low: str, data: bytes, words: frozenset[bytes]) -> list[Hit]:
        """Every hit in a reading (``text``, lower-cased as ``low``, whose bytes are
        ``data``: ``ascii_bytes(low)``)."""
        found = _Found(text, low, data.translate(_FLAT))
        for word in self._words & words:
            group = _live(self._by_word[word], words)
            if len(group) >= _HEAD_AFTER:
                # Every live literal that starts where the scan found one (one may be a
                # prefix of another: "you have", "you have been given").
                flat = found.flat
                for occurrence in self._heads[word].finditer(flat):
                    start = occurrence.start()
                    for literal, entries in group.values():
                        if flat.startswith(literal.encoded, start):
                            found.at(literal, entries, start)
            else:
                for literal, entries in group.values():
                    found.each(literal, entries)
        for literal, entries in _live(self._odd, words).values():
            found.each(literal, entries)
        return found.hits


# A first word with this many live literals ("you are", "you will", "you have", ...) is
# looked for with one regex over their alternation (their common prefix makes it one C
# scan); fewer are looked for one ``bytes.find`` each.
_HEAD_AFTER = 3


def _head(literals: list[_Literal]) -> re.Pattern[bytes]:
    """The alternation of a first word's literals, to find where any of them starts."""
    return re.compile(b"|".join(re.escape(literal.encoded) for literal in literals))


def _live(
    literals: list[_Literal], words: frozenset[bytes]
) -> dict[bytes, tuple[_Literal, tuple[tuple[int, Rule, float], ...]]]:
    """The literals whose words the text holds, each with the rules whose ``needs`` it
    meets (a literal with none left is dropped)."""
    live = {}
    for literal in literals:
        if not literal.rest <= words:
            continue
        entries = literal.always
        if not literal.needs.isdisjoint(words):
            entries += tuple(e for e in literal.gated if not e[1].needs.isdisjoint(words))
        if entries:
            live[literal.encoded] = (literal, entries)
    return live


class _Found:
    """The hits of one reading, collected literal by literal (a rule fires once at a
    place, however many of its literals lead there)."""

    __slots__ = ("flat", "hits", "low", "seen", "text")

    def __init__(self, text: str, low: str, flat: bytes) -> None:
        self.text = text
        self.low = low
        self.flat = flat
        self.hits: list[Hit] = []
        self.seen: set[tuple[int, int]] = set()

    def each(self, literal: _Literal, entries: tuple[tuple[int, Rule, float], ...]) -> None:
        position = self.flat.find(literal.encoded)
        while position != -1:
            self.at(literal, entries, position)
            position = self.flat.find(literal.encoded, position + 1)

    def at(
        self, literal: _Literal, entries: tuple[tuple[int, Rule, float], ...], position: int
    ) -> None:
        flat, low = self.flat, self.low
        if literal.first is not None and position and flat[position - 1 : position].isalnum():
            return
        if not low.startswith(literal.text, position):
            return
        if literal.gate is not None and literal.gate.match(low, position) is None:
            return
        for index, item, weight in entries:
            hit = _hit(item, weight, self.text, low, literal.text, position)
            if hit is not None and (index, hit.start) not in self.seen:
                self.seen.add((index, hit.start))
                self.hits.append(hit)


def _gate(entries: list[tuple[int, Rule, float]]) -> re.Pattern[str] | None:
    """One pattern that matches where any of a literal's rules could: the common case, a
    word that starts none of its phrases, then costs one match instead of one per rule.
    None when a rule searches backwards from its literal and must always be tried."""
    if any(item.back for _, item, _ in entries):
        return None
    union = "|".join(
        f"(?:{_NAMED_GROUP.sub('(?:', item.pattern.pattern)})" for _, item, _ in entries
    )
    return re.compile(union)


def _hit(item: Rule, weight: float, text: str, low: str, literal: str, position: int) -> Hit | None:
    """The rule's hit at one occurrence of its start word, if it matches there."""
    if item.back:
        found = item.pattern.search(low, max(0, position - item.back), position + len(literal) + 60)
        if found is None or not found.start() <= position < found.end():
            return None
    else:
        found = item.pattern.match(low, position)
        if found is None:
            return None
    if item.imperative and not sentence_start(low, found.start()):
        return None
    factor = MENTION_FACTOR if item.mention and mentioned(low, found.start()) else 1.0
    if item.check is not None:
        factor *= item.check(text, low, found)
    if factor <= 0:
        return None
    return Hit(item.id, min(1.0, weight * factor), *found.span())
