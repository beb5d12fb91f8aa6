"""Per-step cost of the loop gate at window 32, over a pass-through gate in the same run.

A long run's mixed stream of calls, built once from a seeded generator so every variant
sees the same calls with the same results:

  tool calls  search (5-15 word query, filters, paging), get_customer (an id, field list,
              options), read_file (path, offset, length): 150-400 bytes of arguments each,
              answered with a few hundred bytes of result
  llm calls   an eight-message conversation, the last a 10-30 word user question, and a
              40-80 word answer

Nothing in the stream loops, so every detector does its full work on every step: the
window is full (32 calls) after the first few dozen steps and stays full.

Variants, each on its own run (the gate keeps its state per run):

  pass      a gate that only awaits next: the cost of a gate frame, the baseline
  loops     LoopGate, the run alone in its session (the common case: no ping-pong turns)
  session   LoopGate, two runs taking turns in one session (ping-pong turns kept)

The variants run interleaved in rounds after a warm-up, so drift lands on all alike.
Target: the loop gate adds at most 20 µs per step (median) over the pass-through gate.

Run: .venv/bin/python bench/loops.py
"""

from __future__ import annotations

import asyncio
import gc
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from corral.aio import loop_factory
from corral.calls import Call, Halt, LLMCall, LLMResult, Result, ToolCall, ToolResult, Usage
from corral.gates.base import Gate, Next, RunContext
from corral.gates.loops import LoopGate
from corral.policy import Policy, parse_policy
from corral.state import RunRecord, SQLiteStore
from corral.telemetry.audit import AuditLog

ROUNDS = 10
PER_ROUND = 5_000  # steps per variant per round: 50k in all
WARM_UP = 2_000
STREAM = 4_096  # distinct calls in the stream, replayed in a cycle
TARGET_US = 20.0
POLICY = """
version: 1
providers: {p: {kind: openai, base_url: "http://127.0.0.1:9/v1"}}
models: {m: {provider: p, model: test-model, context_window: 100000}}
routes: {r: [m]}
tools: {search: {scope: read}, get_customer: {scope: read}, read_file: {scope: read}}
agent_types: {worker: {}}
agents:
  a: {type: worker, route: r, tools: [search, get_customer, read_file]}
  b: {type: worker, route: r, tools: [search, get_customer, read_file]}
loops: {repeat: 3, similar: {threshold: 0.9, count: 4}, no_progress_steps: 5, error_repeat: 3,
        ping_pong: 4, window: 32, action: halt}
"""
VOCABULARY = (
    "cheap flights paris london berlin hotel review price refund invoice order customer "
    "shipping delay warranty battery laptop phone screen broken replace return policy "
    "account password reset login error timeout server database backup restore migration "
    "python rust kubernetes ingress certificate renewal billing plan upgrade downgrade "
    "discount coupon loyalty points delivery address change cancel subscription monthly "
    "annual report quarterly revenue growth churn retention cohort analysis dashboard "
    "export csv import schema column index query slow latency cache redis queue worker "
    "retry backoff webhook signature verify token expired scope permission admin role"
)
WORDS = VOCABULARY.split()


def sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.sample(WORDS, rng.randint(low, high)))


@dataclass(frozen=True, slots=True)
class Planned:
    """A call of the stream with its answer; `call()` builds it fresh (gates mutate calls)."""

    kind: str
    name: str
    args: Any
    answer: Result

    def call(self) -> Call:
        if self.kind == "tool":
            return ToolCall(self.name, self.args)
        return LLMCall(self.name, self.args, max_tokens=256)


def stream(seed: int = 11) -> list[Planned]:
    rng = random.Random(seed)
    planned: list[Planned] = []
    system = {"role": "system", "content": "You are a support agent. " + sentence(rng, 20, 30)}
    for n in range(STREAM):
        roll = rng.random()
        if roll < 0.3:
            query = sentence(rng, 5, 15)
            args: Any = {
                "query": query,
                "filters": {"region": rng.choice(["eu", "us", "apac"]), "since": "2025-01-01",
                            "max_price": rng.randint(50, 900), "tags": rng.sample(WORDS, 3)},
                "page": rng.randint(1, 9),
                "limit": 20,
            }  # fmt: skip
            value: Any = [{"id": f"r-{n}-{i}", "title": sentence(rng, 4, 8)} for i in range(4)]
            planned.append(Planned("tool", "search", args, ToolResult(value)))
        elif roll < 0.5:
            args = {
                "customer_id": 10_000 + n,
                "fields": ["name", "email", "plan", "orders", "tickets", "address"],
                "include": {"orders": {"limit": 5, "status": "open"}, "notes": True},
            }
            value = {"id": 10_000 + n, "name": f"Customer {n}", "plan": "pro", "orders": [n, n + 1]}
            planned.append(Planned("tool", "get_customer", args, ToolResult(value)))
        elif roll < 0.6:
            args = {"path": f"docs/{rng.choice(WORDS)}/{n}.md", "offset": 4096 * (n % 7),
                    "length": 4096, "encoding": "utf-8"}  # fmt: skip
            planned.append(Planned("tool", "read_file", args, ToolResult(sentence(rng, 40, 60))))
        else:
            history: list[dict[str, Any]] = [system]
            for turn in range(3):
                history.append({"role": "user", "content": sentence(rng, 8, 20)})
                history.append({"role": "assistant", "content": sentence(rng, 20, 40) + f" {turn}"})
            history.append({"role": "tool", "content": sentence(rng, 10, 20)})
            history.append({"role": "user", "content": sentence(rng, 10, 30) + f" #{n}?"})
            answer = LLMResult(sentence(rng, 40, 80), Usage(300, 80), model="m")
            planned.append(Planned("llm", "r", history, answer))
    return planned


class PassThrough:
    async def __call__(self, call: Call, ctx: RunContext, next: Next) -> Result:
        return await next(call, ctx)


class Scripted:
    """The transport: answers the step being measured with its planned result."""

    def __init__(self) -> None:
        self.answer: Result = ToolResult(None)

    async def __call__(self, call: Call, ctx: RunContext) -> Result:
        return self.answer


def context(policy: Policy, agent: str, run_id: str, session: str) -> RunContext:
    now = time.time()
    record = RunRecord(id=run_id, agent=agent, agent_type="worker", created_at=now, updated_at=now)
    return RunContext(
        record=record, session=session, policy=policy, agent_policy=policy.agents[agent]
    )


@dataclass
class Variant:
    name: str
    gate: Gate
    contexts: list[RunContext]
    baseline: Variant | None = None
    samples: list[int] = field(default_factory=list)
    halts: int = 0
    position: int = 0

    def summary(self) -> tuple[float, float]:
        """Median and p99 (nearest rank) in µs."""
        ordered = sorted(self.samples)
        p99 = ordered[math.ceil(0.99 * len(ordered)) - 1]
        return statistics.median(ordered) / 1000, p99 / 1000


async def measure(variant: Variant, planned: list[Planned], steps: int, *, keep: bool) -> None:
    gate, contexts, transport = variant.gate, variant.contexts, Scripted()
    clock = time.perf_counter_ns
    for _ in range(steps):
        step = planned[variant.position % len(planned)]
        ctx = contexts[variant.position % len(contexts)]  # runs of one session take turns
        variant.position += 1
        call = step.call()  # built outside the timing, as the agent's code builds it
        transport.answer = step.answer
        started = clock()
        try:
            await gate(call, ctx, transport)
        except Halt:
            variant.halts += 1
        elapsed = clock() - started
        ctx.step_seq += 1  # as the record gate does
        if keep:
            variant.samples.append(elapsed)


async def main() -> None:
    policy = parse_policy(POLICY, env={})
    planned = stream()
    store = SQLiteStore(":memory:")  # the audit log is written only under action: warn
    audit = AuditLog(store)
    baseline = Variant("pass", PassThrough(), [context(policy, "a", "run_pass", "run_pass")])
    variants = [
        baseline,
        Variant("loops", LoopGate(audit), [context(policy, "a", "run_loops", "run_loops")],
                baseline),
        Variant("session", LoopGate(audit), [context(policy, "a", "run_s1", "s"),
                                             context(policy, "b", "run_s2", "s")], baseline),
    ]  # fmt: skip
    for variant in variants:
        await measure(variant, planned, WARM_UP, keep=False)
    for _ in range(ROUNDS):
        for variant in variants:
            gc.collect()  # a collection owed by one variant is not charged to the next
            await measure(variant, planned, PER_ROUND, keep=True)
    await store.close()

    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    print(f"corral loop gate, per step, window 32; Python {sys.version.split()[0]}, {loop} loop")
    print(f"{'variant':<9} {'steps':>6} {'median µs':>10} {'p99 µs':>8} {'over pass µs':>13}")
    for variant in variants:
        median, p99 = variant.summary()
        extra = "-"
        if variant.baseline is not None:
            extra = f"{median - variant.baseline.summary()[0]:.1f}"
        print(
            f"{variant.name:<9} {len(variant.samples):>6} {median:>10.1f} {p99:>8.1f} {extra:>13}"
        )
    print(f"halts in the stream: {sum(v.halts for v in variants)} (it has no loops: 0 expected)")
    (base_median, base_p99), (median, p99) = baseline.summary(), variants[1].summary()
    print(f"loop gate p99 per step: {p99 - base_p99:.1f} µs over the pass-through gate")
    verdict = "met" if median - base_median <= TARGET_US else "MISSED"
    print(
        f"loop gate median per step: {median - base_median:.1f} µs "
        f"(target <= {TARGET_US:g} µs): {verdict}"
    )


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())
