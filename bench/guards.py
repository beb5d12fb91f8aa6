"""Speed of Corral's guards, each next to the tool people would otherwise use, in one run.

Sections (a function each; ``main`` runs them in order):

  pii   find_pii over the 1,500 sentences of tests/guards/data/presidio_synth_dataset_v2.json
        (each sentence on its own, as the output gate sees answers) and over one 1 MB text
        made of those sentences, in µs per KB of text; Presidio's analyzer on the same
        sentences in its bench venv (pattern recognizers on a blank spaCy pipeline, the
        same entity types; see bench/presidio_run.py) in µs per sentence; and the ratio of
        the two per sentence (target: Corral >= 100x faster). If the Presidio venv cannot
        be built the section says why and prints Corral's figures alone.

Both sides are timed the same way: the fastest of several passes over all the sentences
(Corral: 7 after a warm-up pass; Presidio: 3 after a warm-up of 20 sentences, each
analyze() call timed), each pass's time divided by the number of sentences. The fastest
pass is the one least disturbed by whatever else shares this machine's two cores; compare
the figures of one run, not of runs at different times.

Run: .venv/bin/python bench/guards.py [--no-presidio]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corral.guards import find_pii
from presidio_env import run_presidio

PII_DATA = Path(__file__).resolve().parents[1] / "tests/guards/data/presidio_synth_dataset_v2.json"
PII_ENTITIES = [
    "CREDIT_CARD",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "US_SSN",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_DRIVER_LICENSE",
    "URL",
]
ROUNDS = 7


def _best_seconds(work: Callable[[], object], rounds: int = ROUNDS) -> float:
    work()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return min(times)


def pii_section(args: argparse.Namespace) -> None:
    texts = [r["full_text"] for r in json.loads(PII_DATA.read_text(encoding="utf-8"))]
    kb = sum(len(t.encode()) for t in texts) / 1024
    per_pass = _best_seconds(lambda: [find_pii(t) for t in texts])
    per_sentence_us = per_pass / len(texts) * 1e6
    big = "\n".join(texts)
    big = (big + "\n") * (1024 * 1024 // len(big.encode()) + 1)
    big_kb = len(big.encode()) / 1024
    big_s = _best_seconds(lambda: find_pii(big), rounds=3)
    print("== pii: find_pii")
    print(
        f"sentences:  {len(texts)} ({kb:.0f} KB), {per_pass / kb * 1e6:.1f} µs/KB, "
        f"{per_sentence_us:.1f} µs per sentence"
    )
    print(f"1 MB text:  {big_kb:.0f} KB in {big_s * 1e3:.1f} ms, {big_s / big_kb * 1e6:.1f} µs/KB")
    if args.no_presidio:
        return
    result = run_presidio(texts, PII_ENTITIES, passes=3)
    if isinstance(result, str):
        print(f"Presidio:   not measured ({result})")
        return
    seconds = result["seconds"]
    presidio_us = statistics.mean(seconds) * 1e6
    presidio_kb = sum(seconds) / kb * 1e6
    print(
        f"Presidio:   {presidio_us:.0f} µs per sentence (median sentence "
        f"{statistics.median(seconds) * 1e6:.0f}), {presidio_kb:.0f} µs/KB"
    )
    print(
        f"ratio:      Corral is {presidio_us / per_sentence_us:.0f}x faster per sentence "
        "(target >= 100x)"
    )


SECTIONS: tuple[Callable[[argparse.Namespace], None], ...] = (pii_section,)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-presidio", action="store_true", help="Corral's figures only")
    args = parser.parse_args()
    for section in SECTIONS:
        section(args)


if __name__ == "__main__":
    main()
