"""PII detection quality: Corral's find_pii and Presidio's analyzer on the same labelled set.

Data: tests/guards/data/presidio_synth_dataset_v2.json (1,500 sentences from Presidio's
template generator, 2,863 labelled spans; see tests/guards/data/README.md).

Scoring, per entity type:
  - A predicted span matches a gold span of the same type when the two overlap (at least
    one character in common); each gold span and each prediction is matched at most once.
    Unmatched predictions are false positives, unmatched gold spans false negatives. The
    "exact" columns count a match only when start and end are both equal.
  - F2 = 5PR / (4P + R): recall weighs four times precision, as for a redactor a miss
    leaks a value and a false positive only hides a few harmless characters.
  - "neg FP": predictions of the type in sentences that have no gold span of that type
    (the target is 0).
  - The gold type DOMAIN_NAME (the dataset labels whole URLs so) is matched by a URL or a
    DOMAIN_NAME prediction, for both detectors.
Types: the pattern-shaped ones (the targets: F2 >= 0.90 each, and at least Presidio's),
US_DRIVER_LICENSE apart (5 spans), URL/DOMAIN_NAME, and the name-like types neither
detector finds here (Corral ships no model; Presidio's NER has none on a blank pipeline).

Presidio is scored at its default (every result it returns) and at the score threshold
that gives it the best F2 on each type, so the comparison does not hinge on its default.

Run: .venv/bin/python bench/pii_quality.py [--no-presidio] [--json]
(the first run builds bench/.venv-presidio; see bench/presidio_env.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corral.guards import find_pii
from presidio_env import run_presidio

DATA = Path(__file__).resolve().parents[1] / "tests/guards/data/presidio_synth_dataset_v2.json"
PATTERN_TYPES = (
    "CREDIT_CARD",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "US_SSN",
    "IBAN_CODE",
    "IP_ADDRESS",
)
OTHER_TYPES = ("US_DRIVER_LICENSE", "DOMAIN_NAME")
NAME_LIKE = ("PERSON", "LOCATION", "GPE", "ORGANIZATION", "NRP", "TITLE")
# Predicted entity -> the gold type it is scored against.
SCORED_AS = {"URL": "DOMAIN_NAME"}
PRESIDIO_ENTITIES = [*PATTERN_TYPES, "US_DRIVER_LICENSE", "URL"]
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(20))

Span = tuple[str, int, int]  # scored type, start, end


@dataclass
class Counts:
    gold: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    exact_tp: int = 0
    neg_fp: int = 0

    def scores(self, exact: bool = False) -> tuple[float, float, float]:
        tp = self.exact_tp if exact else self.tp
        predicted = self.tp + self.fp
        p = tp / predicted if predicted else (1.0 if not self.gold else 0.0)
        r = tp / self.gold if self.gold else 1.0
        f2 = 5 * p * r / (4 * p + r) if p + r else 0.0
        return p, r, f2


def load() -> list[dict]:
    records: list[dict] = json.loads(DATA.read_text(encoding="utf-8"))
    return records


def gold_spans(record: dict) -> list[Span]:
    return [(s["entity_type"], s["start_position"], s["end_position"]) for s in record["spans"]]


def evaluate(
    golds: Sequence[Sequence[Span]], predictions: Sequence[Sequence[Span]], types: Iterable[str]
) -> dict[str, Counts]:
    """Per-type counts over parallel lists of gold and predicted spans (see module doc)."""
    counts = {t: Counts() for t in types}
    for gold, predicted in zip(golds, predictions, strict=True):
        for t, c in counts.items():
            g = [s for s in gold if s[0] == t]
            p = [s for s in predicted if s[0] == t]
            c.gold += len(g)
            used: set[int] = set()
            for _, gs, ge in g:
                hit = next(
                    (i for i, (_, ps, pe) in enumerate(p) if i not in used and ps < ge and gs < pe),
                    None,
                )
                if hit is None:
                    c.fn += 1
                    continue
                used.add(hit)
                c.tp += 1
                c.exact_tp += p[hit][1:] == (gs, ge)
            c.fp += len(p) - len(used)
            if not g:
                c.neg_fp += len(p)
    return counts


def corral_spans(texts: Sequence[str]) -> list[list[Span]]:
    return [
        [(SCORED_AS.get(f.entity, f.entity), f.start, f.end) for f in find_pii(t)] for t in texts
    ]


def presidio_spans(raw: list[list[dict]], threshold: float) -> list[list[Span]]:
    return [
        [
            (SCORED_AS.get(r["entity"], r["entity"]), r["start"], r["end"])
            for r in results
            if r["score"] >= threshold
        ]
        for results in raw
    ]


def report(corral: dict[str, Counts], presidio: dict[str, dict[str, Counts]] | None) -> str:
    head = f"{'type':<18} {'gold':>4}  {'P':>5} {'R':>5} {'F2':>5} {'exF2':>5} {'negFP':>5}"
    if presidio:
        head += f"  | Presidio {'P':>5} {'R':>5} {'F2':>5} {'exF2':>5} {'negFP':>5}"
        head += f"  | best thr {'F2':>5}"
    lines = [head]
    for group, types in (("pattern-shaped", PATTERN_TYPES), ("others", OTHER_TYPES)):
        lines.append(f"-- {group}")
        for t in types:
            c = corral[t]
            p, r, f2 = c.scores()
            row = f"{t:<18} {c.gold:>4}  {p:5.3f} {r:5.3f} {f2:5.3f} {c.scores(True)[2]:5.3f}"
            row += f" {c.neg_fp:>5}"
            if presidio:
                d = presidio[0.0][t]
                pp, pr, pf2 = d.scores()
                row += f"  |          {pp:5.3f} {pr:5.3f} {pf2:5.3f} {d.scores(True)[2]:5.3f}"
                thr, best = max(
                    ((th, presidio[th][t].scores()[2]) for th in THRESHOLDS), key=lambda x: x[1]
                )
                row += f" {d.neg_fp:>5}  |   {thr:4.2f}  {best:5.3f}"
            lines.append(row)
    lines.append(f"-- name-like, not detected by either: {', '.join(NAME_LIKE)}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-presidio", action="store_true", help="Corral's figures only")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    records = load()
    texts = [r["full_text"] for r in records]
    golds = [gold_spans(r) for r in records]
    types = [*PATTERN_TYPES, *OTHER_TYPES]
    corral = evaluate(golds, corral_spans(texts), types)
    presidio: dict[str, dict[str, Counts]] | None = None
    note = ""
    if not args.no_presidio:
        result = run_presidio(texts, PRESIDIO_ENTITIES)
        if isinstance(result, str):
            note = f"Presidio not measured: {result}"
        else:
            presidio = {
                th: evaluate(golds, presidio_spans(result["predictions"], th), types)
                for th in THRESHOLDS
            }
    if args.json:
        out = {"corral": {t: c.__dict__ for t, c in corral.items()}}
        if presidio:
            out["presidio"] = {t: c.__dict__ for t, c in presidio[0.0].items()}
        print(json.dumps(out, indent=2))
    else:
        print(f"{len(texts)} sentences; overlap match (exF2: exact start and end)")
        print(report(corral, presidio))
    if note:
        print(note)
    misses = [t for t in PATTERN_TYPES if corral[t].scores()[2] < 0.90 or corral[t].neg_fp]
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
