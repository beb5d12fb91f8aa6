"""What a matched shape is: the readings of one candidate, each an entity, an end and a score.

Scores follow one scale: at or above ``REPORT`` (0.5) a reading is reported. Strong shapes
(an e-mail address, a validated IBAN, card in groups, dashed SSN, an IP address, a
North-American or ``+``-international phone number) score above it on their own; context
can only confirm them, or pull them below it when the nearest label names an identifier
that is not PII ("order", "invoice", "build", "ref"...). Weak shapes (national phone
numbers in bare groups, bare digit runs, driving-licence numbers) score below it and are
reported only when the nearest label before them (or, for phones, a word just after:
"0490 75 40 81 office") names what they are. That keeps ``555 1234`` in a log line
untagged while ``Phone: 555 1234`` is tagged, and never lets a missing label hide a
Luhn-valid card number written in groups.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from corral.guards.pii_checks import (
    IBAN_LENGTHS,
    card_ok,
    iban_ok,
    ipv4_ok,
    ipv6_ok,
    looks_like_date,
    ssn_ok,
)
from corral.guards.pii_patterns import (
    CONTEXT_BEFORE,
    CURRENCY_CODES,
    CURRENCY_SIGNS,
    LABEL_WORDS,
    LABELS,
    PAIR_LABELS,
    PHONE_AFTER,
    STREET_AFTER,
    WORD,
)

REPORT = 0.5
_LABEL_BOOST = 0.35
_NOT_PII = 0.3

_OTHER_KINDS = frozenset({"card", "ssn", "dl"})

Reading = tuple[str, int, float]  # entity, end (in the folded text), score

_EXT = re.compile(r"\s?(?:x|ext\.?|extn\.?)\s?[0-9]{1,6}$")
_GROUP = re.compile(r"[0-9]+")
_URL_TAIL = ".,;:!?'\""


class Around:
    """The words around one candidate in the folded text, read only when a reading asks."""

    __slots__ = ("_label", "_looked", "start", "text")

    def __init__(self, text: str, start: int) -> None:
        self.text = text
        self.start = start
        self._label: str | None = None
        self._looked = False

    def label(self) -> str | None:
        """The kind named by the nearest label word before the candidate, if any."""
        if not self._looked:
            self._label = self._nearest_label()
            self._looked = True
        return self._label

    def _nearest_label(self) -> str | None:
        low = max(0, self.start - CONTEXT_BEFORE)
        words = WORD.findall(self.text[low : self.start].lower())
        if LABEL_WORDS.isdisjoint(words):
            return None
        if low and self.text[low - 1].isalpha() and self.text[low].isalpha():
            del words[0]  # cut by the window: not a whole word
        for j in range(len(words) - 1, -1, -1):
            kind = LABELS.get(words[j])
            if kind is None and j:
                kind = PAIR_LABELS.get((words[j - 1], words[j]))
            if kind is not None:
                return kind
        return None

    def phone_after(self, end: int) -> bool:
        return PHONE_AFTER.match(self.text[end : end + 16].lower()) is not None

    def street_after(self, end: int) -> bool:
        return STREET_AFTER.match(self.text, end, end + 60) is not None

    def currency_before(self) -> bool:
        """A price, not an identifier: "$ 1 299 999", "EUR 1 250 000"."""
        window = self.text[max(0, self.start - 5) : self.start].rstrip()
        return window[-1:] in CURRENCY_SIGNS or window[-3:].lower() in CURRENCY_CODES


def _adjust(score: float, around: Around, kind: str | None, boost: float = 0.2) -> float:
    label = around.label()
    if kind is not None and label == kind:
        return min(1.0, score + boost)
    if label == "neg":
        return score - _NOT_PII
    return score


def _email(m: re.Match[str], around: Around) -> list[Reading]:
    """An address, less a capitalised word the text glued to its end: in
    "To: ganesh@moonchaser.ioHi Ganesh" the top-level domain is "io"."""
    address = m.group()
    tld = address[address.rindex(".") + 1 :]
    glued = next((i for i in range(2, len(tld)) if tld[i].isupper() and tld[i - 1].islower()), None)
    end = m.end() - (len(tld) - glued if glued is not None else 0)
    return [("EMAIL_ADDRESS", end, 0.9)]


def _url(m: re.Match[str], around: Around) -> list[Reading]:
    return [("URL", m.start() + len(_trim_url(m.group())), 0.6)]


def _domain(m: re.Match[str], around: Around) -> list[Reading]:
    return [("DOMAIN_NAME", m.start() + len(_trim_url(m.group())), 0.5)]


def _trim_url(url: str) -> str:
    """Drop the sentence's punctuation after a link, and a ')' the link did not open."""
    while url and (url[-1] in _URL_TAIL or (url[-1] == ")" and url.count("(") < url.count(")"))):
        url = url[:-1]
    return url


def _iban(m: re.Match[str], around: Around) -> list[Reading]:
    """Take exactly the country's length of characters; a space may only separate groups
    of four, so a short number does not borrow letters from the next word."""
    raw = m.group()
    length = IBAN_LENGTHS.get(raw[:2].upper())
    if length is None:
        return []
    chars: list[str] = []
    end = 0
    for i, ch in enumerate(raw):
        if ch == " ":
            if len(chars) % 4:
                return []
            continue
        chars.append(ch)
        if len(chars) == length:
            end = m.start() + i + 1
            break
    else:
        return []
    if end < len(around.text) and around.text[end].isalnum():
        return []
    return [("IBAN_CODE", end, 0.95)] if iban_ok("".join(chars)) else []


def _ipv6(m: re.Match[str], around: Around) -> list[Reading]:
    start, text = m.start(), around.text
    if (
        start >= 2
        and text[start - 1] == "["
        and (text[start - 2].isalnum() or text[start - 2] in "_)]")
    ):
        return []  # a slice, x[1000::2000], not an address in brackets
    return [("IP_ADDRESS", m.end(), 0.75)] if ipv6_ok(m.group()) else []


def _ipv4(m: re.Match[str], around: Around) -> list[Reading]:
    if not ipv4_ok(m.group()):
        return []
    return [("IP_ADDRESS", m.end(), _adjust(0.75, around, None))]


def _intl_phone(m: re.Match[str], around: Around) -> list[Reading]:
    main = _EXT.sub("", m.group())
    n = sum(map(str.isdigit, main))
    if not 8 <= n <= 15:
        return []
    return [("PHONE_NUMBER", m.end(), _phone_score(0.7, around, m.end()))]


def _nanp_phone(m: re.Match[str], around: Around) -> list[Reading]:
    return [("PHONE_NUMBER", m.end(), _phone_score(0.7, around, m.end()))]


def _phone_score(score: float, around: Around, end: int) -> float:
    label = around.label()
    if label == "phone" or around.phone_after(end):
        return min(1.0, score + _LABEL_BOOST)
    if label == "neg":
        return score - _NOT_PII
    return score


def _ssn(m: re.Match[str], around: Around) -> list[Reading]:
    digits = m.group().replace(m.group("ssn_sep"), "")
    if not ssn_ok(digits):
        return []
    base = 0.85 if m.group("ssn_sep") == "-" else 0.55
    return [("US_SSN", m.end(), _adjust(base, around, "ssn"))]


def _card(m: re.Match[str], around: Around) -> list[Reading]:
    digits = m.group().replace(m.group("card_sep"), "")
    return [("CREDIT_CARD", m.end(), 0.95)] if card_ok(digits) else []


def _grouped(m: re.Match[str], around: Around) -> list[Reading]:
    """National phone numbers and dashed licence numbers. A greedy match may have taken a
    following number too ("555 1234 5 times"): shorter readings end at a space."""
    if around.currency_before():
        return []
    raw = m.group()
    ext = _EXT.search(raw) if "x" in raw else None
    main = raw[: ext.start()] if ext else raw
    groups = _GROUP.findall(main)
    readings = _grouped_readings(groups, around, m.end())
    if readings or ext or len(groups) == 2:
        return readings
    ends = [g.end() for g in _GROUP.finditer(main)]
    for k in range(len(groups) - 1, 1, -1):
        if main[ends[k - 1]] == " ":
            readings = _grouped_readings(groups[:k], around, m.start() + ends[k - 1])
            if readings:
                return readings
    return []


def _grouped_readings(groups: list[str], around: Around, end: int) -> list[Reading]:
    if looks_like_date(groups):
        return []
    n = sum(map(len, groups))
    out: list[Reading] = []
    if (
        7 <= n <= 12
        and min(map(len, groups)) >= 2
        and around.label() not in _OTHER_KINDS  # "SSN 000-12-3456" is a bad SSN, no phone
        and not around.street_after(end)
    ):
        trunk = (around.text[around.start] == "(" or groups[0][0] == "0") and n >= 9
        score = _phone_score(0.5 if trunk else 0.35, around, end)
        if score >= REPORT:
            out.append(("PHONE_NUMBER", end, score))
    if 7 <= n <= 13 and around.label() == "dl":
        out.append(("US_DRIVER_LICENSE", end, 0.7))
    return out


def _digits(m: re.Match[str], around: Around) -> list[Reading]:
    """A bare run of digits: a card on its own (issuer, length, Luhn) unless its label says
    it is something else; an SSN, a phone or a licence only when labelled so."""
    digits, end = m.group(), m.end()
    n = len(digits)
    label = around.label()
    out: list[Reading] = []
    if 12 <= n <= 19 and card_ok(digits):
        score = 0.9 if label == "card" else 0.4 if label in ("neg", "phone") else 0.8
        out.append(("CREDIT_CARD", end, score))
    if n == 9 and label == "ssn" and ssn_ok(digits):
        out.append(("US_SSN", end, 0.7))
    if (
        7 <= n <= 11
        and (label == "phone" or around.phone_after(end))
        and not around.street_after(end)
    ):
        out.append(("PHONE_NUMBER", end, 0.6))
    if 7 <= n <= 13 and label == "dl":
        out.append(("US_DRIVER_LICENSE", end, 0.7))
    return out


def _licence(m: re.Match[str], around: Around) -> list[Reading]:
    return [("US_DRIVER_LICENSE", m.end(), 0.7)] if around.label() == "dl" else []


# The highest score each shape's reader can give: a shape is not tried where a reading that
# scores more is already in hand.
BEST_SCORE = {
    "email": 0.9,
    "url": 0.6,
    "domain": 0.5,
    "iban": 0.95,
    "ipv6": 0.75,
    "ipv4": 0.75,
    "intl_phone": 1.0,
    "nanp_phone": 1.0,
    "ssn": 1.0,
    "card": 0.95,
    "grouped": 0.85,
    "digits": 0.9,
    "licence": 0.7,
}

READERS: dict[str, Callable[[re.Match[str], Around], list[Reading]]] = {
    "email": _email,
    "url": _url,
    "domain": _domain,
    "iban": _iban,
    "ipv6": _ipv6,
    "ipv4": _ipv4,
    "intl_phone": _intl_phone,
    "nanp_phone": _nanp_phone,
    "ssn": _ssn,
    "card": _card,
    "grouped": _grouped,
    "digits": _digits,
    "licence": _licence,
}
