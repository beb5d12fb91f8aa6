"""Redaction of what Corral keeps: every string inside a JSON value, through the PII
detector; keys, numbers, booleans and the value's shape kept as they were.

Pure, like the detectors: SealedStore and the audit log call it on each record they keep
(steps, packets, audit payloads), so most strings it sees are short and hold nothing
(roles, tool names, statuses). Those skip the detector when that is provably safe: every
shape `find_pii` looks for (pii_patterns.SHAPES) needs an ASCII digit, '@', ':' or '.' in
the folded text (an e-mail its '@', a URL its '://' or 'www.', a domain name or IPv4 its
dots, IPv6 its colons, every other entity its digits), and an ASCII string folds to itself
but for letters between digits. So an ASCII string with none of those four characters has
no finding; any other string (non-ASCII text may fold a full-width '＠' or digit into one)
goes through the detector. The storage tests check this against the detector.

The same string is often redacted twice in a row (a step as the store keeps it, and the
view of it the record gate keeps for the packet), so the last CACHED results for strings
up to CACHED_CHARS long are remembered: the second time costs a dictionary look-up.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from corral.guards.pii import RedactStyle, find_pii, redact

# The characters some shape of the detector needs (see the module's docstring).
_TRIGGER = re.compile(r"[0-9@:.]")
CACHED = 1024
CACHED_CHARS = 4096  # at most some 8 MB remembered


def redact_json(value: Any, *, style: RedactStyle = "label", salt: bytes | None = None) -> Any:
    """`value` with the PII in each of its strings redacted (`redact`'s `style` and `salt`);
    dicts and lists are copied, tuples come back as tuples, anything else as it is."""
    if isinstance(value, str):
        return redact_text(value, style=style, salt=salt)
    if isinstance(value, dict):
        return {key: redact_json(item, style=style, salt=salt) for key, item in value.items()}
    if isinstance(value, list | tuple):
        items = [redact_json(item, style=style, salt=salt) for item in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def redact_text(text: str, *, style: RedactStyle = "label", salt: bytes | None = None) -> str:
    """`text` with its PII redacted; `text` itself when it has none."""
    if text.isascii() and _TRIGGER.search(text) is None:
        return text
    if len(text) <= CACHED_CHARS:
        return _remembered(text, style, salt)
    return _redacted(text, style, salt)


def _redacted(text: str, style: RedactStyle, salt: bytes | None) -> str:
    findings = find_pii(text)
    return redact(text, findings, style, salt=salt) if findings else text


_remembered = functools.lru_cache(maxsize=CACHED)(_redacted)
