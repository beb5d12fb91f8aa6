"""Validators: the checks that tell a real identifier from a number that only has its shape.

A regex for "12 to 19 digits" or "three digits, dash, two, dash, four" also matches order
ids, log counters, timestamps and invoice numbers. Most identifiers carry structure a random
number rarely has: a card number's issuer prefix, length and Luhn check digit; an IBAN's
per-country length and mod-97 check; the SSA's rules on SSN areas, groups and serials; an
IPv4 address's octets. Each function here takes the digits or characters a pattern found and
says whether they are plausible, so the patterns can stay general and the precision comes
from here.
"""

from __future__ import annotations

import ipaddress

# Card issuers: (first digits low, high, digits compared, allowed lengths). A number must
# fall in one range with one of that range's lengths, and pass Luhn. Ranges from the
# issuers' published IIN tables (Visa, Mastercard incl. the 2-series, Amex, Diners,
# Discover, JCB incl. its legacy 15-digit 1800/2131 cards, UnionPay, Maestro, Mir, RuPay,
# Verve, Troy). Maestro's 50 and 56-69 are broad, and so is JCB's 35: its assigned block is
# 3528-3589, but card generators and test data use the whole of 35xx, and a redactor would
# rather hide such a number than leak it; the length and Luhn still apply to all of them.
_CARD_RANGES: tuple[tuple[int, int, int, frozenset[int]], ...] = (
    (4, 4, 1, frozenset({13, 16, 19})),
    (51, 55, 2, frozenset({16})),
    (2221, 2720, 4, frozenset({16})),
    (34, 34, 2, frozenset({15})),
    (37, 37, 2, frozenset({15})),
    (300, 305, 3, frozenset(range(14, 20))),
    (3095, 3095, 4, frozenset(range(14, 20))),
    (36, 36, 2, frozenset(range(14, 20))),
    (38, 39, 2, frozenset(range(14, 20))),
    (6011, 6011, 4, frozenset(range(16, 20))),
    (644, 649, 3, frozenset(range(16, 20))),
    (65, 65, 2, frozenset(range(16, 20))),
    (35, 35, 2, frozenset(range(16, 20))),
    (1800, 1800, 4, frozenset({15})),
    (2131, 2131, 4, frozenset({15})),
    (62, 62, 2, frozenset(range(16, 20))),
    (81, 82, 2, frozenset({16})),
    (50, 50, 2, frozenset(range(12, 20))),
    (56, 69, 2, frozenset(range(12, 20))),
    (2200, 2204, 4, frozenset(range(16, 20))),
    (508, 508, 3, frozenset({16})),
    (9792, 9792, 4, frozenset({16})),
)


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check digit every payment card number ends with: from the right,
    every second digit doubled (less 9 when over 9), the sum a multiple of 10. Summed as
    ASCII bytes (each digit is its byte less 48), the doubling by a byte table: no Python
    loop over the digits."""
    b = digits[::-1].encode()
    return (sum(b[0::2]) + sum(b[1::2].translate(_DOUBLED)) - 48 * len(b)) % 10 == 0


_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")


def card_ok(digits: str) -> bool:
    """A known issuer's prefix with one of its lengths, and the Luhn check."""
    n = len(digits)
    for width, lengths_by_prefix in _CARD_PREFIXES.items():
        lengths = lengths_by_prefix.get(digits[:width])
        if lengths is not None and n in lengths:
            return luhn_ok(digits)
    return False


def _prefix_table() -> dict[int, dict[str, frozenset[int]]]:
    """The ranges as one dict per prefix width: a lookup per width instead of a loop."""
    table: dict[int, dict[str, frozenset[int]]] = {}
    for low, high, width, lengths in _CARD_RANGES:
        by_prefix = table.setdefault(width, {})
        for prefix in range(low, high + 1):
            key = str(prefix)
            by_prefix[key] = by_prefix.get(key, frozenset()) | lengths
    return table


_CARD_PREFIXES = _prefix_table()


# IBAN length per country (the SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_ok(iban: str) -> bool:
    """``iban`` (letters and digits only, any case) has its country's length and passes
    the ISO 13616 mod-97 check."""
    iban = iban.upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit():
        return False
    return int((iban[4:] + iban[:4]).translate(_AS_NUMBER)) % 97 == 1


# ISO 13616: each letter counts as two digits, A = 10 ... Z = 35.
_AS_NUMBER = str.maketrans({chr(65 + i): str(10 + i) for i in range(26)})


# Numbers published as examples (the Woolworth wallet card, the SSA's advertising range is
# already excluded as area 9xx), and the sequences people type as placeholders.
_FAKE_SSNS = frozenset({"078051120", "219099999", "123456789", "457555462", "111223333"})


def ssn_ok(digits: str) -> bool:
    """The SSA's rules: no area 000, 666 or 900-999, no group 00, no serial 0000; not one
    repeated digit and not a published example."""
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return len(set(digits)) > 1 and digits not in _FAKE_SSNS


def ipv4_ok(text: str) -> bool:
    """Four decimal octets of at most 255, no leading zero (``010`` reads as octal to some
    tools and is more often part of a version or a date), optionally with a /prefix."""
    address, _, prefix = text.partition("/")
    if prefix and int(prefix) > 32:
        return False
    parts = address.split(".")
    return len(parts) == 4 and all(int(p) <= 255 and (len(p) == 1 or p[0] != "0") for p in parts)


def ipv6_ok(text: str) -> bool:
    """A valid IPv6 address (compressed, full or with an embedded IPv4 tail), with an
    optional zone and /prefix. Compressed forms need three groups written out or one of
    four hex digits, and a decimal digit somewhere: a bare ``::``, ``::1``, C++'s
    ``a::b`` and Python's ``b[0::2]`` are not addresses anyone redacts."""
    address, _, prefix = text.partition("/")
    if prefix and int(prefix) > 128:
        return False
    address = address.partition("%")[0]
    groups = [g for g in address.split(":") if g]
    if not any(c.isdigit() for c in address):
        return False
    if "::" in address and len(groups) < 3 and max(map(len, groups), default=0) < 4:
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


def looks_like_date(groups: list[str]) -> bool:
    """Three leading digit groups that read as a calendar date (year first or last), so
    ``2023-10-05`` or ``05.10.2023`` is not taken for a phone number or a licence."""
    if len(groups) < 3:
        return False
    a, b, c = groups[0], groups[1], groups[2]
    if len(a) == 4 and len(b) <= 2 and len(c) <= 2:
        return _year(a) and 1 <= int(b) <= 12 and 1 <= int(c) <= 31
    if len(c) in (2, 4) and len(a) <= 2 and len(b) <= 2:
        day_month = (1 <= int(a) <= 31 and 1 <= int(b) <= 12) or (
            1 <= int(a) <= 12 and 1 <= int(b) <= 31
        )
        # A two-digit year only ends a date: "21 03 45 67" is a phone number.
        return day_month and ((len(c) == 2 and len(groups) == 3) or _year(c))
    return False


def _year(s: str) -> bool:
    return 1800 <= int(s) <= 2199
