"""Redaction of kept JSON: every string redacted, the structure kept, and the fast path
that skips the detector never skipping a string the detector would change."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.guards.pii import find_pii, redact
from corral.guards.storage import redact_json, redact_text

EMAIL, CARD, SSN = "ada@example.com", "4111 1111 1111 1111", "536-22-1234"


def test_every_string_is_redacted_and_the_rest_is_kept() -> None:
    value = {
        "messages": [
            {"role": "user", "content": f"I am {EMAIL}, card {CARD}"},
            {"role": "tool", "content": [{"type": "text", "text": f"SSN {SSN}"}]},
        ],
        "temperature": 0.2,
        "n": 3,
        "stream": False,
        "stop": None,
        EMAIL: ("keys stay", SSN),
    }
    kept = redact_json(value)
    assert kept["messages"][0] == {
        "role": "user",
        "content": "I am [EMAIL_ADDRESS], card [CREDIT_CARD]",
    }
    assert kept["messages"][1]["content"][0]["text"] == "SSN [US_SSN]"
    assert (kept["temperature"], kept["n"], kept["stream"], kept["stop"]) == (0.2, 3, False, None)
    assert kept[EMAIL] == ("keys stay", "[US_SSN]")  # a key is not redacted; tuples stay tuples
    assert value["messages"][0]["content"] == f"I am {EMAIL}, card {CARD}"  # not edited in place


def test_a_string_without_pii_comes_back_as_itself() -> None:
    text = "Order 1042 shipped on 2026-11-30."
    assert redact_text(text) is text
    assert redact_json(["ok", 7]) == ["ok", 7]


def test_mask_and_hash_styles_pass_through() -> None:
    assert redact_text(f"mail {EMAIL}", style="mask") == "mail ***@*******.***"
    hashed = redact_text(f"mail {EMAIL} or {EMAIL}", style="hash", salt=b"run")
    assert hashed.count("[EMAIL_ADDRESS:") == 2 and len(set(hashed.split())) == 3


def test_full_width_characters_are_not_skipped() -> None:
    # No ASCII digit or '@' here, but the detector folds these into an address.
    text = "write to ada＠example．com"
    assert find_pii(text)
    assert "ada" not in redact_text(text)


# The fast path skips ASCII strings with no digit, '@', ':' or '.': the detector must find
# nothing in any of them, whatever the words.
_WORDS = st.sampled_from(
    ["www", "http", "https", "com", "org", "example", "ada", "mail", "card", "ssn", "iban",
     "DE", "GB", "x", "ext", "tel", "phone", "OlI", "-", "/", "+", "_", "(", ")", "#", " ",
     "\n", ",", "%", "[EMAIL_ADDRESS]"]
)  # fmt: skip
_NO_TRIGGER = "".join(c for c in string.printable if c not in string.digits + "@:.")


@settings(max_examples=400, deadline=None)
@given(st.lists(_WORDS | st.text(alphabet=_NO_TRIGGER, max_size=12), max_size=30))
def test_the_fast_path_skips_only_strings_with_no_finding(parts: list[str]) -> None:
    text = "".join(parts)
    assert find_pii(text) == []


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.printable + "＠．：４", max_size=80))
def test_redact_text_agrees_with_the_detector(text: str) -> None:
    assert redact_text(text) == redact(text, find_pii(text))
