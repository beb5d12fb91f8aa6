"""What the loop gate compares: free text by its words and marks, and tool arguments in a
canonical form, so that a rephrased request reads as the same one and paging does not."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

# A string of 2..64 words is free text, compared by its words; longer text is a body (a
# file, an email), compared whole: a long body changed by a few words is an edit, which
# is work (a coding agent's write-and-test cycle), not a rephrased request.
MAX_TEXT_WORDS: Final = 64
LONG_STRING: Final = 256  # longer strings are kept as their hash: equality is all we need
_WORD = re.compile(r"\w+(?:[-./:]\w+)*")
_DIGIT = re.compile(r"\d")
_JSON_SPACE = re.compile(r"\s*([{}\[\],:])\s*")
# Words that do not change what a request asks for.
_STOPWORD_TEXT: Final = (
    "a an the and or of to in on at for from by with about into over per is are was be "
    "it its this that these those i me my we our you your please what which how where when "
    "find show get give list search look up some any all can could would do does"
)
_STOPWORDS: Final = frozenset(_STOPWORD_TEXT.split())
_normal_cache: dict[str, str] = {}  # word -> its normal form; a vocabulary is small
_NORMAL_CACHE_MAX: Final = 50_000


# --- text similarity --------------------------------------------------------------


class Text:
    """A text as the similarity measure sees it: its words (lowercased, stopwords dropped,
    crudely stemmed) and its marks (tokens with a digit: ids, dates, amounts, versions)."""

    __slots__ = ("marks", "words")

    def __init__(self, words: frozenset[str], marks: frozenset[str]) -> None:
        self.words = words
        self.marks = marks


def _normal(token: str) -> str:
    """'#'-prefixed for a mark, '' for a stopword, else the word stemmed. The stems need
    only be the same for the same word in every call, not right: 'cheapest' and 'cheap'
    meet at 'cheap', 'flights' and 'flight' at 'flight'."""
    if _DIGIT.search(token):
        return "#" + token
    if token in _STOPWORDS:
        return ""
    word = token
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("est", "ing", "er"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def text_of(text: str) -> Text:
    words: set[str] = set()
    marks: set[str] = set()
    cache = _normal_cache
    for token in _WORD.findall(text.lower()):
        normal = cache.get(token)
        if normal is None:
            normal = _normal(token)
            # Words only: marks (ids, amounts) are new in nearly every call, and caching
            # them would fill the cache with every id an agent ever sent.
            if normal[:1] != "#":
                if len(cache) >= _NORMAL_CACHE_MAX:
                    cache.clear()
                cache[token] = normal
        if not normal:
            continue
        if normal[0] == "#":
            marks.add(normal)
        else:
            words.add(normal)
    return Text(frozenset(words), frozenset(marks))


def similarity(a: Text, b: Text) -> float:
    """How far one text is a rephrasing of the other, 0..1.

    Texts whose marks differ are different requests ('ORD-1001' / 'ORD-1002', 'May 3' /
    'May 4'): 0. Otherwise the overlap coefficient of the word sets, |A & B| / min(|A|,
    |B|): a word added or the words reordered scores 1.0, 'weather in paris' / 'weather in
    london' 0.5. A one-word text says too little to be called the rephrasing of a longer
    one, so unequal sets need at least two words on the smaller side.
    """
    if a.marks != b.marks:
        return 0.0
    if a.words == b.words:
        return 1.0
    smaller = min(len(a.words), len(b.words))
    if smaller < 2:
        return 0.0
    return len(a.words & b.words) / smaller


Feature = Text | str  # free text by its words, or any other value canonical and whole


def feature_similarity(a: Feature, b: Feature) -> float:
    if isinstance(a, Text) and isinstance(b, Text):
        return similarity(a, b)
    return 1.0 if a == b else 0.0


def _short(text: str) -> str:
    return text if len(text) <= LONG_STRING else f"#{hash(text):x}:{len(text)}"


def feature(text: str) -> Feature:
    words = text.split()
    if 1 < len(words) <= MAX_TEXT_WORDS:
        return text_of(text)
    return _short(" ".join(words))


# --- canonical tool arguments -----------------------------------------------------


def _walk(value: Any, path: str, fixed: list[str], texts: list[tuple[str, str]]) -> None:
    """Flatten `value` into `path=value` parts, free text apart. Whitespace never matters
    (a model re-emitting the same arguments with other spacing sends the same call), nor
    does 1 against 1.0; a string is never the number it spells, nor true the number 1."""
    if isinstance(value, str):
        if value.startswith(("{", "[")):  # JSON kept as text (a malformed call): its spacing
            value = _JSON_SPACE.sub(r"\1", value)
        words = value.split()
        if 1 < len(words) <= MAX_TEXT_WORDS:
            texts.append((path, " ".join(words)))
        else:
            fixed.append(f"{path}=s{_short(' '.join(words))}")
    elif isinstance(value, bool):
        fixed.append(f"{path}=b{int(value)}")
    elif isinstance(value, int):
        fixed.append(f"{path}=n{value}")
    elif isinstance(value, float):
        fixed.append(f"{path}=n{int(value) if value.is_integer() else repr(value)}")
    elif value is None:
        fixed.append(f"{path}=z")
    elif isinstance(value, Mapping):
        if not value:
            fixed.append(f"{path}={{}}")
        for name, item in value.items():
            _walk(item, f"{path}.{name}", fixed, texts)
    elif isinstance(value, list | tuple):
        if not value:
            fixed.append(f"{path}=[]")
        for index, item in enumerate(value):
            _walk(item, f"{path}[{index}]", fixed, texts)
    else:
        fixed.append(f"{path}=o{_short(repr(value))}")


def canonical(name: str, args: Mapping[str, Any]) -> tuple[str, str, tuple[Text, ...]]:
    """(key, shape, texts) of a tool call. Equal keys: the same call (sorted keys, so the
    order the model wrote them in does not matter). Equal shapes: the same call but for the
    words of its free text, `texts` in path order.

    Only free text can make two calls near-identical: every other value, a number, a
    flag, an id or a cursor (one token without spaces), must be equal. So paging (page,
    offset, cursor), walking ids and any changed option are distinct calls, whatever the
    search string they share.
    """
    fixed: list[str] = []
    texts: list[tuple[str, str]] = []
    _walk(args, "", fixed, texts)
    fixed.sort()
    texts.sort()
    shape = "\x1e".join([name, *fixed, *("~" + path for path, _ in texts)])
    key = "\x1d".join([shape, *(text for _, text in texts)])
    return key, shape, tuple(text_of(text) for _, text in texts)


def texts_similarity(a: tuple[Text, ...], b: tuple[Text, ...]) -> float:
    """Two calls of one shape: as similar as their least similar free-text field."""
    least = 1.0
    for one, other in zip(a, b, strict=True):
        least = min(least, similarity(one, other))
    return least
