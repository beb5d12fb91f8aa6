"""Quality and speed of the prompt-injection detector on BIPIA's development data.

Positives: every BIPIA attack (75 text, 50 code) inserted at the start, middle and end of
each of the 50 benign email contexts, scanned as documents (18,750 texts). Negatives: the
50 contexts alone, and the hand-written benign corpus (user turns, tool results and
documents, each scanned as its own source). Prints recall per attack category (marking
the held-out half of the categories), overall recall on each half, the false-positive
rates, and the scan's cost in µs per KB: over the emails with attacks, over the benign
emails one by one (half a KB each, so the cost of a call weighs in), and over the benign
emails joined into one 25 KB document. Each figure is the best of several rounds, the
least disturbed by whatever else the machine runs.

Other BIPIA-format files can be scored the same way, e.g. BIPIA's test split:

  .venv/bin/python bench/injection_quality.py \\
      --attacks BIPIA/benchmark/text_attack_test.json BIPIA/benchmark/code_attack_test.json \\
      --contexts BIPIA/benchmark/email/test.jsonl

Run: .venv/bin/python bench/injection_quality.py
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.guards.benign_corpus import corpus
from tests.guards.injection_cases import (
    ATTACK_FILES,
    DATA,
    EMAIL_FILE,
    load_attacks,
    load_contexts,
    positives,
)

from corral.guards import scan_injection

TIMING_ROUNDS = 7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attacks", nargs="+", type=Path,
                        default=[DATA / name for name in ATTACK_FILES])  # fmt: skip
    parser.add_argument("--contexts", type=Path, default=DATA / EMAIL_FILE)
    args = parser.parse_args()
    attacks = load_attacks(args.attacks)
    contexts = load_contexts(args.contexts)

    caught: dict[tuple[str, str, bool], list[int]] = defaultdict(lambda: [0, 0])
    halves: dict[bool, list[int]] = {False: [0, 0], True: [0, 0]}
    texts: list[str] = []
    for attack, text in positives(attacks, contexts):
        flagged = scan_injection(text, "document").flagged
        for tally in (caught[(attack.kind, attack.category, attack.held_out)],
                      halves[attack.held_out]):  # fmt: skip
            tally[0] += flagged
            tally[1] += 1
        texts.append(text)

    print(f"{'kind':<5} {'category':<46} {'split':<9} {'recall':>7}")
    for (kind, category, held_out), (hit, total) in caught.items():
        split = "held-out" if held_out else "tune"
        print(f"{kind:<5} {category:<46} {split:<9} {hit / total:>7.3f}")
    hit = sum(h for h, _ in halves.values())
    total = sum(t for _, t in halves.values())
    for held_out, name in ((False, "tune half"), (True, "held-out half")):
        h, t = halves[held_out]
        if t:
            print(f"recall, {name}: {h / t:.3f} ({h}/{t})")
    print(f"recall, overall: {hit / total:.3f} ({hit}/{total})")

    email_fp = [c for c in contexts if scan_injection(c, "document").flagged]
    benign = corpus()
    corpus_fp = [(s, t) for s, t in benign if scan_injection(t, s).flagged]
    negatives = len(contexts) + len(benign)
    print(f"false positives, email contexts: {len(email_fp)}/{len(contexts)}"
          f" ({len(email_fp) / len(contexts):.2%})")  # fmt: skip
    print(f"false positives, benign corpus: {len(corpus_fp)}/{len(benign)}"
          f" ({len(corpus_fp) / len(benign):.2%})")  # fmt: skip
    print(f"false positives, all negatives: {len(email_fp) + len(corpus_fp)}/{negatives}"
          f" ({(len(email_fp) + len(corpus_fp)) / negatives:.2%})")  # fmt: skip
    for source, text in corpus_fp:
        print(f"  corpus FP ({source}): {text[:100]!r}")
    for text in email_fp:
        print(f"  email FP: {text[:100]!r}")

    timed = (
        ("emails with attacks", texts),
        ("benign emails", contexts),
        ("benign emails as one document", ["\n\n".join(contexts)]),
    )
    for name, sample in timed:
        size = sum(len(t.encode()) for t in sample) / 1024
        rounds = []
        for _ in range(TIMING_ROUNDS):
            started = time.perf_counter()
            for text in sample:
                scan_injection(text, "document")
            rounds.append((time.perf_counter() - started) / size * 1e6)
        print(f"speed, {name}: {min(rounds):.1f} µs per KB "
              f"({size:.0f} KB, best of {TIMING_ROUNDS} rounds)")  # fmt: skip


if __name__ == "__main__":
    main()
