"""The shapes the PII detector looks for, compiled once at import.

Each shape is one regex over the folded text (see ``pii_text``): ASCII digits, ``-`` for
every dash, ``' '`` for every space. A shape only says "this could be X"; ``pii_classify``
decides what it is, from validators and the words around it.

Every shape holds a digit, an ``@``, a ``:`` or a ``.``, so one pass of ``TRIGGER``, led by
a single character class that the regex engine skips through at C speed, finds the places
worth a look; ``pii_scan`` tries there only the shapes that can hold that character. Joining
the thirteen shapes into one alternation instead costs as much as thirteen passes, since the
engine tries every branch at every position.

Boundaries matter as much as the shapes: a number glued to a letter, a dot, a slash or a
dash (``v1.2.3.4``, ``ORD-555-123-4567``, ``/api/4111111111111111``, ``3.14159``) is part
of a larger token, not a value on its own.
"""

from __future__ import annotations

import re

# Not inside a larger token, on either side. A number may follow ':' ("Tel:555 1234"),
# '#' and ',' ("Office\,0770 ..."), but not a letter, '.', '/', '-', '+' or '@'.
_L = r"(?<![A-Za-z0-9_.@/+-])"
_R = r"(?![A-Za-z0-9_@]|[.,:/-][0-9])"
_EXT = r"(?:\s?(?:x|ext\.?|extn\.?)\s?[0-9]{1,6})?"

SHAPES: dict[str, str] = {
    "email": r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])",
    "url": r"(?<![A-Za-z0-9])(?:(?i:https?|ftp)://[A-Za-z0-9]|(?i:www)\.[A-Za-z0-9])"
    r"[^\s<>\"'`{}|\\^\[\]]*",
    # Bare host names only under TLDs that are not also file extensions or code
    # (.py, .rs, .sh, .md, .pl, .at, .to ...): generic ones and ccTLDs' second levels.
    "domain": r"(?<![A-Za-z0-9_.@/-])(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?i:com|org|net|edu|gov|info|biz|io|(?:co|com|org|net|gov|ac|edu)\.[a-z]{2})"
    r"(?![A-Za-z0-9_-]|\.[A-Za-z0-9])(?:/[^\s<>\"'`{}|\\^\[\]]*)?",
    "iban": r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]){11,30}",
    "ipv6": r"(?<![A-Za-z0-9_:.])(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?(?:%[A-Za-z0-9]+)?(?:/[0-9]{1,3})?"
    r"(?![A-Za-z0-9_:]|\.[0-9])",
    "ipv4": r"(?<![A-Za-z0-9_.:/-])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?:/[0-9]{1,2})?"
    r"(?![A-Za-z0-9_]|\.[0-9])",
    "intl_phone": r"(?<![A-Za-z0-9_])\+[0-9]{1,15}"
    r"(?:[ .-]?\([0-9]{1,4}\)[ .-]?[0-9]{1,14}|[ .-][0-9]{1,14})*" + _EXT + _R,
    # North American: optional +1 / 1 / 001, area code 2-9xx (in parentheses or not),
    # exchange, line.
    "nanp_phone": _L + r"(?:(?:\+?1|001)[ .-]?)?(?:\([2-9][0-9]{2}\)[ .-]?|[2-9][0-9]{2}[ .-])"
    r"[0-9]{3}[ .-][0-9]{4}" + _EXT + _R,
    "ssn": _L + r"[0-9]{3}(?P<ssn_sep>[- .])[0-9]{2}(?P=ssn_sep)[0-9]{4}" + _R,
    "card": _L + r"[0-9]{4}(?P<card_sep>[ -])[0-9]{4,6}(?:(?P=card_sep)[0-9]{3,5}){1,3}" + _R,
    # Digit groups: national phone numbers in their many layouts, dashed licence numbers.
    "grouped": _L
    + r"(?:\([0-9]{1,5}\)[ .-]?|[0-9]{1,5}[ .-])[0-9]{1,8}(?:[ .-][0-9]{1,8}){0,4}"
    + _EXT
    + _R,
    "digits": _L + r"[0-9]{7,19}" + _R,
    "licence": r"(?<![A-Za-z0-9_-])(?:[A-Za-z]{1,2}[0-9]{4,14}|[A-Za-z][0-9]{3}(?:-[0-9]{2,4}){2,4}"
    r"|[0-9]{1,3}[A-Za-z]{1,3}[0-9]{2,9}|[0-9]{7,9}[A-Za-z])(?![A-Za-z0-9_]|-[0-9])",
}

SHAPE: dict[str, re.Pattern[str]] = {name: re.compile(p) for name, p in SHAPES.items()}
# Where a value may start: a digit run that could begin one or end the letters that begin
# one (after a letter, seven digits or more, or followed by a separator and another group,
# a ')', a ':' or a letter: "6750 Koskikatu" or "Hungary 34796" starts nothing), an '@', a
# ':' that a hex digit, ':' or '/' follows, and a '.' that a host-name character follows
# (not a full stop). Led by one character class, so that the engine skips through all
# else at C speed; the rest are look-arounds, as an alternation of classes would lose
# that. The letters include the digit look-alikes (pii_text.LOOKALIKE_DIGITS): "67O9".
TRIGGER = re.compile(
    r"[0-9@:.](?<![0-9]{2})(?:"  # never from inside a digit run
    r"(?<=[0-9])(?:(?<=[A-Za-z][0-9])[0-9]*+|[0-9]*+"  # possessive: no retrying of "64677"
    r"(?:(?<=[0-9]{7})|(?=[ .\-/][0-9(]|[):A-Za-z\u041e\u043e\u039f\u03bf\u0406])))"
    r"|(?<=:)(?=[0-9A-Fa-f:/])|(?<=\.)(?=[A-Za-z0-9-])|(?<=@))"
)


# Labels that say what a nearby number is. The nearest one before a candidate (within
# CONTEXT_BEFORE characters) names it: "license no. 555 1234, phone 555 9876" labels each
# number by its own word. ``neg`` words name identifiers that are not PII. Looked up word by
# word (split on spaces, punctuation stripped) in a dict, from the candidate backwards: a
# regex alternation of a hundred words tried at every position of the window costs ten
# times more.
CONTEXT_BEFORE = 40
_LABEL_WORDS = {
    "phone": "phone phones telephone tel mobile mob cell cellphone fax desk office home"
    " landline hotline call called calling ring text sms whatsapp contact reach dial"
    " message messages answer answering ext",
    "card": "card cards credit debit cc visa mastercard amex discover jcb diners maestro unionpay",
    "ssn": "ssn ssns",
    "dl": "driver drivers driving license licence dl dln",
    "neg": "order invoice inv tracking ref reference ticket booking confirmation transaction"
    " txn serial sku isbn id po case build version versions v ver rev revision release pid port"
    " code error account"
    " acct item product part model batch lot",
}
LABELS = {word: kind for kind, words in _LABEL_WORDS.items() for word in words.split()}
PAIR_LABELS = {("social", "security"): "ssn", ("soc", "sec"): "ssn"}
# Any word that can make a label, for a set test before the word-by-word walk (most
# windows hold none of them).
LABEL_WORDS = frozenset(LABELS) | {w for pair in PAIR_LABELS for w in pair}
# Words are runs of letters, so "Phone:", "(ssn)", "card#" and "driver's" give plain words.
WORD = re.compile(r"[a-z]+")
# A phone's label may also follow it: "416 60 039 office", "(37) 788-063-Office".
PHONE_AFTER = re.compile(r"[\s,;:()-]{0,3}(?:office|fax|mobile|cell|home|work|tel|phone)\b")
# A number followed by a name and a street type is a house number (and a postcode before
# it), not a phone: "03262 2437 Main St", "17031 2202 Rissik St".
STREET_AFTER = re.compile(
    r"\s+(?:[A-Z][A-Za-z'-]*\s+){1,3}(?:St|Street|Ave|Avenue|Rd|Road|Blvd|Boulevard|Ln|Lane"
    r"|Dr|Drive|Way|Ct|Court|Pl|Place|Sq|Square|Hwy|Highway|Pkwy|Parkway|Ter|Terrace"
    r"|Cres|Crescent)\b"
)
CURRENCY_SIGNS = frozenset("$€£¥₹")
CURRENCY_CODES = frozenset({"usd", "eur", "gbp", "chf", "jpy"})
