"""Speed of Corral's guards, each next to the tool people would otherwise use, in one run.

Sections (a function each; ``main`` runs them in order):

  pii   find_pii over the 1,500 sentences of tests/guards/data/presidio_synth_dataset_v2.json
        (each sentence on its own, as the output gate sees answers) and over one 1 MB text
        made of those sentences, in µs per KB of text; Presidio's analyzer on the same
        sentences in its bench venv (pattern recognizers on a blank spaCy pipeline, the
        same entity types; see bench/presidio_run.py) in µs per sentence; and the ratio of
        the two per sentence (target: Corral >= 100x faster). If the Presidio venv cannot
        be built the section says why and prints Corral's figures alone.

  injection  scan_injection over BIPIA's email contexts with and without attacks, as
        tool output, in µs per KB
  stream  the output gate's added time to first byte on a stream (pii: redact against
        pii: off, an upstream sending a word every 20 ms)

Both PII sides are timed the same way: the fastest of several passes over all the sentences
(Corral: 7 after a warm-up pass; Presidio: 3 after a warm-up of 20 sentences, each
analyze() call timed), each pass's time divided by the number of sentences. The fastest
pass is the one least disturbed by whatever else shares this machine's two cores; compare
the figures of one run, not of runs at different times.

Run: .venv/bin/python bench/guards.py [--no-presidio]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "guards"))

from corral.calls import Call, LLMCall, LLMResult, StreamDelta, Usage
from corral.gates.base import RunContext
from corral.gates.output_guard import OutputGuardGate
from corral.guards import find_pii, scan_injection
from corral.policy_guards import Guards, OutputGuards
from corral.telemetry.audit import AuditLog
from corral.telemetry.guard_stats import GuardStats
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


def injection_section(args: argparse.Namespace) -> None:
    """scan_injection over BIPIA's email contexts, each with and without an attack in it,
    as tool output (the stricter source), in µs per KB."""
    from injection_cases import development, positives  # tests/guards, on sys.path

    attacks, contexts = development()
    texts = [*contexts, *(text for _, text in positives(attacks, contexts))]
    kb = sum(len(t.encode()) for t in texts) / 1024
    per_pass = _best_seconds(lambda: [scan_injection(t, "tool") for t in texts])
    big = "\n".join(texts)[: 1024 * 1024]
    big_kb = len(big.encode()) / 1024
    big_s = _best_seconds(lambda: scan_injection(big, "tool"), rounds=3)
    print("== injection: scan_injection (source tool)")
    print(
        f"texts:      {len(texts)} ({kb:.0f} KB), {per_pass / kb * 1e6:.1f} µs/KB, "
        f"{per_pass / len(texts) * 1e6:.1f} µs per text"
    )
    print(f"one text:   {big_kb:.0f} KB in {big_s * 1e3:.1f} ms, {big_s / big_kb * 1e6:.1f} µs/KB")


def stream_section(args: argparse.Namespace) -> None:
    """The output gate's added time to first byte on a stream: an upstream sending a word
    every WORD_MS, through the gate with pii: redact against pii: off, in one run."""
    words = STREAMED.split(" ")
    firsts = {}
    for mode in ("off", "redact"):
        firsts[mode] = statistics.median(asyncio.run(_first_bytes(words, mode)) for _ in range(5))
    added = firsts["redact"] - firsts["off"]
    print(f"== stream: time to first byte, upstream word every {WORD_MS:g} ms")
    print(
        f"pii off:    {firsts['off'] * 1e3:.1f} ms;  pii redact: {firsts['redact'] * 1e3:.1f} ms;  "
        f"added: {added * 1e3:.1f} ms ({added / (WORD_MS / 1e3):.0f} words held)"
    )


WORD_MS = 20.0  # 50 words a second: about what a fast model streams
STREAMED = (
    "Your order 1042 left our warehouse this morning and should reach you on Friday; the "
    "courier will text you a link to follow it, and you can reply to this message if "
    "anything changes before then."
)


async def _first_bytes(words: list[str], mode: str) -> float:
    """Seconds from the upstream's first word to the client's first piece of text."""
    got: list[float] = []
    started: list[float] = []

    async def client(delta: StreamDelta) -> None:
        if delta.text and not got:
            got.append(time.perf_counter())

    async def upstream(call: Call, ctx: RunContext) -> LLMResult:
        assert isinstance(call, LLMCall) and call.sink is not None
        for index, word in enumerate(words):
            if index:
                await asyncio.sleep(WORD_MS / 1e3)
            else:
                started.append(time.perf_counter())
            await call.sink(StreamDelta(text=(" " if index else "") + word))
        return LLMResult(" ".join(words), Usage(10, len(words)), "smart")

    guards = Guards(output=OutputGuards(pii=mode))  # type: ignore[arg-type]
    ctx = SimpleNamespace(policy=SimpleNamespace(guards=guards), run_id="run_bench")
    gate = OutputGuardGate(AuditLog(None, redact=lambda v: v), GuardStats())  # type: ignore[arg-type]
    call = LLMCall("default", [{"role": "user", "content": "Where is my order?"}], sink=client)
    await gate(call, ctx, upstream)  # type: ignore[arg-type]
    return got[0] - started[0]


SECTIONS: tuple[Callable[[argparse.Namespace], None], ...] = (
    pii_section,
    injection_section,
    stream_section,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-presidio", action="store_true", help="Corral's figures only")
    args = parser.parse_args()
    for section in SECTIONS:
        section(args)


if __name__ == "__main__":
    main()
