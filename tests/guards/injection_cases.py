"""The injection detector's labelled cases, built from BIPIA's development data.

Positives: each BIPIA attack (text and code) inserted at the start, the middle and the
end of each benign email context, as BIPIA itself builds them (``bipia/data/utils.py``:
the attack joined to the context with newlines; "middle" at a sentence start, which BIPIA
picks at random with NLTK's Punkt tokenizer and this module picks deterministically, the
sentence start nearest the middle). Negatives: the same contexts without an attack, and
the hand-written benign corpus. Email-borne text is scanned as a "document".

The split into tuning and held-out categories alternates over each file's categories,
so both halves hold text and code attacks of every style.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
ATTACK_FILES = ("bipia_text_attack_train.json", "bipia_code_attack_train.json")
EMAIL_FILE = "bipia_email_train.jsonl"
POSITIONS = ("start", "middle", "end")

_SENTENCE_START = re.compile(r"(?<=[.!?])\s+(?=\S)")


@dataclass(frozen=True)
class Attack:
    kind: str  # "text" or "code"
    category: str
    text: str
    held_out: bool


def available(data: Path = DATA) -> bool:
    return all((data / name).exists() for name in (*ATTACK_FILES, EMAIL_FILE))


def load_attacks(paths: list[Path]) -> list[Attack]:
    """The attacks of BIPIA-format files (category -> list of strings); every other
    category of each file is held out."""
    attacks = []
    for path in paths:
        kind = "code" if "code" in path.name else "text"
        with path.open() as handle:
            categories = json.load(handle)
        for index, (category, texts) in enumerate(categories.items()):
            attacks.extend(Attack(kind, category, text, index % 2 == 1) for text in texts)
    return attacks


def load_contexts(path: Path) -> list[str]:
    with path.open() as handle:
        return [json.loads(line)["context"] for line in handle if line.strip()]


def insert(context: str, attack: str, position: str) -> str:
    """``attack`` placed in ``context`` the way BIPIA places it."""
    if position == "start":
        return "\n".join([attack, context])
    if position == "end":
        return "\n".join([context, attack])
    starts = [0] + [m.end() for m in _SENTENCE_START.finditer(context)]
    middle = min(starts, key=lambda start: abs(start - len(context) / 2))
    return "\n".join([context[:middle], attack, context[middle:]])


def positives(attacks: list[Attack], contexts: list[str]) -> Iterator[tuple[Attack, str]]:
    for attack in attacks:
        for context in contexts:
            for position in POSITIONS:
                yield attack, insert(context, attack.text, position)


def development(data: Path = DATA) -> tuple[list[Attack], list[str]]:
    """BIPIA's training attacks and email contexts, as kept in tests/guards/data."""
    return load_attacks([data / name for name in ATTACK_FILES]), load_contexts(data / EMAIL_FILE)
