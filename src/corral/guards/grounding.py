"""Grounding, lexically: which sentences of an answer the run's sources do not support.

A sentence is supported when most of its content words (and every number in it) occur
in the sources: the tool results the conversation holds. Lexical, so fast and without a
model; it misses paraphrase (a supported sentence worded differently is reported), which
is why the gate can only flag or block on it as the policy says, never rewrite.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
_WORD = re.compile(r"[^\W_]+(?:['’.,-][^\W_]+)*", re.UNICODE)
_NUMBER = re.compile(r"\d")
# Words that carry no claim: a sentence is judged on the rest.
_STOP_WORDS = """a an and are as at be been but by can could did do does for from had has
have he her his i if in into is it its me my no not of on or our she so than that the their
them then there these they this those to too us was we were what when where which who will
with would you your yes also just very here about any some all more most such only own same
other each both few how why let please thank thanks hello hi"""
_STOP = frozenset(_STOP_WORDS.split())
SUPPORTED_SHARE = 0.6  # of a sentence's content words found in the sources
MIN_WORDS = 3  # shorter sentences ("Sure!", "Done.") make no claim worth checking


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A sentence of the answer the sources do not support, with where it is."""

    text: str
    start: int
    end: int
    support: float  # the share of its content words the sources hold


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def unsupported(answer: str, sources: Iterable[str]) -> list[Unsupported]:
    """The answer's sentences the sources do not support (none if there are no sources:
    an answer that retrieved nothing is not grounded, nor ungrounded)."""
    vocabulary: set[str] = set()
    for source in sources:
        vocabulary.update(_words(source))
    if not vocabulary:
        return []
    found = []
    for match in _SENTENCE.finditer(answer):
        content = [w for w in _words(match.group()) if w not in _STOP]
        if len(content) < MIN_WORDS:
            continue
        numbers = [w for w in content if _NUMBER.search(w)]
        share = sum(w in vocabulary for w in content) / len(content)
        if share < SUPPORTED_SHARE or any(n not in vocabulary for n in numbers):
            text = match.group().strip()
            start = match.start() + match.group().index(text[:1]) if text else match.start()
            found.append(Unsupported(text, start, start + len(text), round(share, 3)))
    return found
