"""PII detection and redaction: pure functions over one string, no I/O, no model.

``find_pii`` reports e-mail addresses, phone numbers, payment card numbers, US SSNs, IBANs,
IP addresses (v4 and v6), US driving-licence numbers, URLs and bare domain names, with the
entity names Presidio uses, so findings can be compared with (or replaced by) Presidio's.
Names of people, places and organisations are not detected: done well they need a
named-entity model, and this module ships none.

How it works, and why it is fast: the text is folded once (``pii_text``: Unicode look-alikes
and zero-width characters); one pass of a single-character-class regex stops only where a
value could be (``pii_scan``); there the shapes that fit are tried (``pii_patterns``) and
each match is read by validators and nearby label words (``pii_classify``). The best
reading at a place wins (higher score, then longer), and findings never overlap. Offsets
are into the caller's text.

``redact`` replaces findings by a label, a same-length mask, or a salted hash token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from corral.guards.pii_scan import scan
from corral.guards.pii_text import fold

RedactStyle = Literal["label", "mask", "hash"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One value found: its entity type, its span in the text (end exclusive), and a
    score in (0, 1] for how sure the detector is (0.5 and up are reported)."""

    entity: str
    start: int
    end: int
    score: float


def find_pii(text: str) -> list[Finding]:
    """The PII in ``text``, sorted by start and never overlapping."""
    if text.isascii():  # most text: nothing to fold, offsets are the scan's own
        return [Finding(e, a, b, round(score, 2)) for e, a, b, score in scan(text)]
    folded = fold(text)
    found = []
    for entity, start, end, score in scan(folded.text):
        a, b = folded.span(start, end)
        found.append(Finding(entity, a, b, round(score, 2)))
    return found


def redact(
    text: str,
    findings: Sequence[Finding],
    style: RedactStyle = "label",
    *,
    salt: bytes | None = None,
) -> str:
    """``text`` with each finding replaced.

    - ``label``: ``[EMAIL_ADDRESS]``.
    - ``mask``: every letter and digit of the value becomes ``*``; separators (spaces,
      dashes, dots, parentheses, ``@``) stay, so the text keeps its length and layout and
      a reader still sees "a phone number was here" without any of its digits.
    - ``hash``: ``[EMAIL_ADDRESS:1a2b3c4d]``, from BLAKE2b keyed with ``salt`` over the
      entity and the value in canonical form (folded, lower case, separators dropped), so
      the same value gives the same token throughout a run even if written differently
      (``555-123-4567`` and ``(555) 123 4567``), and another run's salt gives another
      token. A salt is required: an unkeyed hash of a nine-digit SSN is reversed by trying
      all of them.

    Findings may come in any order and may overlap (from several detectors): overlapping
    ones are merged into one span, named after the one that starts first (the longest of
    those, on a tie).
    """
    if style == "hash" and not salt:
        raise ValueError("redact(style='hash') needs a salt: a run's secret bytes")
    key = b"" if salt is None else salt if len(salt) <= 64 else hashlib.blake2b(salt).digest()
    pieces: list[str] = []
    pos = 0
    for entity, start, end in _merged(findings, len(text)):
        value = text[start:end]
        pieces.append(text[pos:start])
        if style == "label":
            pieces.append(f"[{entity}]")
        elif style == "mask":
            pieces.append("".join("*" if c.isalnum() else c for c in value))
        else:
            pieces.append(f"[{entity}:{_token(entity, value, key)}]")
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces)


def _merged(findings: Sequence[Finding], length: int) -> list[tuple[str, int, int]]:
    spans: list[tuple[str, int, int]] = []
    for f in sorted(findings, key=lambda f: (f.start, -f.end)):
        if not 0 <= f.start < f.end <= length:
            raise ValueError(f"finding {f} is outside the text (length {length})")
        if spans and f.start < spans[-1][2]:
            entity, start, end = spans[-1]
            spans[-1] = (entity, start, max(end, f.end))
        else:
            spans.append((f.entity, f.start, f.end))
    return spans


def _token(entity: str, value: str, key: bytes) -> str:
    canonical = "".join(c for c in fold(value).text.lower() if c.isalnum() or c in "@.:/")
    digest = hashlib.blake2b(f"{entity}\0{canonical}".encode(), key=key, digest_size=4)
    return digest.hexdigest()
