"""Per-call overhead of the gate pipeline over calling its transport directly, in one run.

Three variants, each for an LLM call and a tool call, timed call by call:

  bare      the transport alone: a coroutine returning a fixed LLMResult, and the real
            tool transport running a trivial async tool (argument check included)
  gates     kill -> deadline -> allowlist -> idempotency -> loops -> context -> budget ->
            rate limit -> route -> retry -> breaker -> transport, as the
            supervisor composes them minus the record gate, on MemoryCounters with caps
            at task, session, fleet and global level, so the budget gate holds and
            settles at every level; tool calls carry no idempotency key (the key's
            lookup is a store read, which belongs to the durable variant)
  recorded  the supervisor's full gate list: the record gate writes a step row and an
            audit entry per call, and tool calls with a key look up and store their
            result, on a SQLite file in a temp dir; as before the write-ahead (the run has
            no owner, so the budget gate writes no in-flight record)
  durable   recorded, plus the write-ahead: the run is owned by a process lease, so
            before each call goes on the budget gate stores its worst case durably (an
            awaited SQLite write) and the call's step deletes it: what the supervisor
            does for every call. Its cost per call is durable minus recorded.

And tracing, on against off: the variants above trace to OpenTelemetry's global provider,
which nothing in the bench sets (a no-op: tracing off). Two more per kind trace to an SDK
TracerProvider with SimpleSpanProcessor(InMemorySpanExporter()), each call's span under
a run span as the SDK makes one per run (the exporter is emptied between rounds, outside
the timing, so memory stays flat):

  traced      the gates variant with tracing on; its baseline is gates
  rec traced  the recorded variant with tracing on; its baseline is recorded

And the approval gate alone, on tool calls through the in-memory gates with a policy of
10 approval rules none of which matches the call:

  no approval   the gates without the approval gate (the baseline of the two below)
  10 indexed    rules that name other tools or scopes (`tool == "sql_write" && ...`): the
                policy files them under those, so this call evaluates none of them
  10 evaluated  rules that could match any tool (`args.n < 0`, `run.steps > 10**6`, ...):
                every one is evaluated, on one CEL context shared by all ten

The variants run interleaved in rounds after a warm-up, so drift (CPU frequency, the
page cache) lands on all of them alike. Targets: the gates variant adds at most 50 µs
per call (median) over bare; 10 rules that do not match cost at most 10 µs per call;
tracing on adds at most 30 µs per call (median, traced minus gates).

Run: .venv/bin/python bench/pipeline.py
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from corral.aio import loop_factory
from corral.calls import Call, LLMCall, LLMResult, Result, ToolCall, Usage
from corral.gates.approval import ApprovalGate
from corral.gates.base import Next, RunContext, compose
from corral.gates.budget import build_caps
from corral.gates.record import RecordGate
from corral.policy import Policy, load_policy
from corral.runtime.supervisor import pipeline, pipeline_gates
from corral.runtime.transport import Transport
from corral.state import MemoryCounters, RunRecord, SQLiteStore
from corral.telemetry.audit import AuditLog
from corral.telemetry.tracing import Tracing
from corral.tools.registry import describe

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "corral.yaml"
AGENT = "support"
ROUNDS = 10
PER_ROUND = 2_000  # calls per round for the in-memory variants: 20k in all
RECORDED_PER_ROUND = 500  # each recorded call is a few SQLite transactions
WARM_UP = 1_000
TARGET_US = 50.0
APPROVAL_TARGET_US = 10.0
TRACING_TARGET_US = 30.0
# Ten rules about other tools and scopes, and ten that may match any tool: none matches
# the bench's `noop` calls.
INDEXED_RULES = [
    *(f'tool == "sql_write" && args.rows > {1000 * n}' for n in range(1, 6)),
    *(f'scope == "irreversible" && args.amount > {100 * n}' for n in range(1, 4)),
    'tool in ["wire_money", "delete_account"]',
    'scope == "write" && agent == "support"',
]
EVALUATED_RULES = [
    *(f"args.n < -{n}" for n in range(1, 5)),
    *(f"run.steps > {10**6 * n}" for n in range(1, 4)),
    'agent == "nobody"',
    "run.cost_usd > 1000.0",
    'agent_type == "research" && args.n > 5',
]
MESSAGES = [
    {"role": "system", "content": "You are a support agent."},
    {"role": "user", "content": "Where is my order #1042?"},
]


def asking(order: int) -> list[dict[str, str]]:
    """MESSAGES about another order."""
    return [MESSAGES[0], {"role": "user", "content": f"Where is my order #{order}?"}]


REPLY = LLMResult(text="It shipped yesterday.", usage=Usage(24, 8), model="smart")


async def bare_llm(call: Call, ctx: RunContext) -> Result:
    return REPLY


async def noop(n: int) -> int:
    return n


def bench_policy(directory: Path, rules: list[str] | None = None, name: str = "corral") -> Policy:
    """The example policy with its store in `directory`, a `noop` tool for the support agent,
    and caps at every level high enough that no call of the bench is refused; with
    `rules`, those are its approval rules."""
    policy = yaml.safe_load(EXAMPLE.read_text())
    if rules is not None:
        policy["approvals"] = [{"when": rule, "timeout": "1h"} for rule in rules]
    policy["store"] = f"sqlite:///{directory}/corral.db"
    policy["tools"]["noop"] = {"scope": "read"}
    policy["agents"][AGENT]["tools"].append("noop")
    high = 10**9
    policy["agent_types"]["operational"] = {
        "task": {"usd": high},
        "session": {
            "usd": high, "tokens": high, "tool_calls": high, "steps": high, "wall_clock": "1d",
        },
        "fleet": {"usd": high, "per": "day"},
    }  # fmt: skip
    policy["global"] = {"usd": high, "per": "day"}
    policy["agents"][AGENT]["rate_limit"] = {
        "requests_per_minute": high, "tokens_per_minute": high, "priority": "high",
    }  # fmt: skip
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return load_policy(path, require_keys=False)


def context(policy: Policy, run_id: str, owner: str | None = None) -> RunContext:
    """A run's context as Supervisor._context builds it for a new run."""
    now = time.time()
    agent = policy.agents[AGENT]
    record = RunRecord(
        id=run_id, agent=AGENT, agent_type=agent.type, created_at=now, updated_at=now,
        owner=owner,
    )  # fmt: skip
    session = policy.agent_types[agent.type].session
    assert session is not None and session.wall_clock is not None
    return RunContext(
        record=record,
        session=run_id,
        policy=policy,
        agent_policy=agent,
        caps=build_caps(policy, agent.type, run_id, run_id, {}),
        deadline=now + session.wall_clock,
    )


def traced(ctx: RunContext, tracing: Tracing) -> RunContext:
    """`ctx` under a run span of its own, as Supervisor._context gives an SDK run's."""
    span = tracing.run_span(AGENT, ctx.record.id, ctx.record.session)
    ctx.span, ctx.trace_context = span, tracing.in_span(span)
    return ctx


@dataclass
class Variant:
    name: str
    handler: Next
    ctx: RunContext
    make_call: Callable[[], Call]
    per_round: int
    baseline: Variant | None = None
    samples: list[int] = field(default_factory=list)
    spans: int = 0  # spans its calls exported (none with tracing off)

    def summary(self) -> tuple[float, float]:
        """Median and p99 (nearest rank) in µs."""
        ordered = sorted(self.samples)
        p99 = ordered[math.ceil(0.99 * len(ordered)) - 1]
        return statistics.median(ordered) / 1000, p99 / 1000


async def measure(variant: Variant, calls: int, *, keep: bool) -> None:
    handler, ctx, make_call = variant.handler, variant.ctx, variant.make_call
    clock = time.perf_counter_ns
    for _ in range(calls):
        call = make_call()  # built outside the timing, as the agent's code builds it
        started = clock()
        await handler(call, ctx)
        elapsed = clock() - started
        if keep:
            variant.samples.append(elapsed)


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        policy = bench_policy(Path(tmp))
        store = SQLiteStore(Path(tmp) / "corral.db")
        counters = MemoryCounters()
        audit = AuditLog(store)
        registered = {"noop": describe(noop, "noop", "read")}
        tools = Transport({}, registered)
        durable = pipeline_gates(store, counters, audit, tools=registered)
        in_memory = [gate for gate in durable if not isinstance(gate, RecordGate)]
        # Tracing on: the same gates over a tracer of an SDK provider of the bench's own.
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracing = Tracing(provider)
        traced_durable = pipeline_gates(store, counters, audit, tools=registered, tracing=tracing)
        traced_in_memory = [g for g in traced_durable if not isinstance(g, RecordGate)]
        assert not Tracing().tracer.start_span("off").is_recording(), "a global provider is set"
        unapproved = [gate for gate in in_memory if not isinstance(gate, ApprovalGate)]
        indexed = bench_policy(Path(tmp), INDEXED_RULES, "indexed")
        evaluated = bench_policy(Path(tmp), EVALUATED_RULES, "evaluated")
        assert not indexed.tool_plans["noop"].rules
        assert len(evaluated.tool_plans["noop"].rules) == len(EVALUATED_RULES)
        numbers = itertools.count()

        # Each call asks something new, as an agent's do: the same call over and over is
        # what the loop gate stops, and it is in the pipeline measured here.
        def llm() -> Call:
            return LLMCall("default", asking(next(numbers)), max_tokens=64)

        def tool() -> Call:
            return ToolCall("noop", {"n": next(numbers)})

        def keyed_tool() -> Call:
            n = next(numbers)
            return ToolCall("noop", {"n": n}, idempotency_key=f"bench:{n}")

        variants: list[Variant] = []
        for kind, transport, plain, keyed in (
            ("llm", bare_llm, llm, llm),
            ("tool", tools, tool, keyed_tool),
        ):
            recorded = context(policy, f"run_{kind}_recorded")
            await store.create_run(recorded.record)
            durable_ctx = context(policy, f"run_{kind}_durable", owner="bench")
            await store.create_run(durable_ctx.record)
            rec_traced = traced(context(policy, f"run_{kind}_rec_traced"), tracing)
            await store.create_run(rec_traced.record)
            bare_ctx = context(policy, f"run_{kind}_bare")
            bare = Variant(f"{kind} bare", transport, bare_ctx, plain, PER_ROUND)
            gates = Variant(
                f"{kind} gates",
                compose(in_memory, transport),
                context(policy, f"run_{kind}_gates"),
                plain,
                PER_ROUND,
                bare,
            )
            recorded_variant = Variant(
                f"{kind} recorded",
                pipeline(durable, transport),
                recorded,
                keyed,
                RECORDED_PER_ROUND,
                bare,
            )
            variants += [
                bare,
                gates,
                recorded_variant,
                Variant(
                    f"{kind} durable",
                    pipeline(durable, transport),
                    durable_ctx,
                    keyed,
                    RECORDED_PER_ROUND,
                    bare,
                ),
                Variant(
                    f"{kind} traced",
                    compose(traced_in_memory, transport),
                    traced(context(policy, f"run_{kind}_traced"), tracing),
                    plain,
                    PER_ROUND,
                    gates,
                ),
                Variant(
                    f"{kind} rec traced",
                    pipeline(traced_durable, transport),
                    rec_traced,
                    keyed,
                    RECORDED_PER_ROUND,
                    recorded_variant,
                ),
            ]

        no_approval = Variant(
            "no approval",
            compose(unapproved, tools),
            context(indexed, "run_no_approval"),
            tool,
            PER_ROUND,
        )
        variants += [
            no_approval,
            Variant(
                "10 indexed",
                compose(in_memory, tools),
                context(indexed, "run_indexed"),
                tool,
                PER_ROUND,
                no_approval,
            ),
            Variant(
                "10 evaluated",
                compose(in_memory, tools),
                context(evaluated, "run_evaluated"),
                tool,
                PER_ROUND,
                no_approval,
            ),
        ]

        for variant in variants:
            await measure(variant, WARM_UP, keep=False)
        exporter.clear()
        for _ in range(ROUNDS):
            for variant in variants:
                gc.collect()  # a collection owed by one variant is not charged to the next
                await measure(variant, variant.per_round, keep=True)
                variant.spans += len(exporter.get_finished_spans())
                exporter.clear()  # outside the timing: the spans held stay a round's
        for variant in variants:
            if variant.ctx.span is not None:
                variant.ctx.span.end()
        provider.shutdown()
        await counters.close()
        await store.close()

    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    print(f"corral pipeline, per call; Python {sys.version.split()[0]}, {loop} event loop")
    print(f"{'variant':<15} {'calls':>6} {'median µs':>10} {'p99 µs':>8} {'overhead µs':>12}")
    overhead: dict[str, float] = {}
    bare_median = {v.name.split()[0]: v.summary()[0] for v in variants if v.baseline is None}
    for variant in variants:
        median, p99 = variant.summary()
        extra = "-"
        if variant.baseline is not None:
            overhead[variant.name] = median - variant.baseline.summary()[0]
            extra = f"{overhead[variant.name]:.1f}"
        print(
            f"{variant.name:<15} {len(variant.samples):>6} {median:>10.1f} {p99:>8.1f} {extra:>12}"
        )
    print("overhead: the variant's median minus its baseline's (bare, no approval, or untraced)")
    for name in ("llm gates", "tool gates"):
        verdict = "met" if overhead[name] <= TARGET_US else "MISSED"
        print(f"target {name} overhead <= {TARGET_US:g} µs: {verdict} ({overhead[name]:.1f} µs)")
    for kind in ("llm", "tool"):
        cost = overhead[f"{kind} durable"] - overhead[f"{kind} recorded"]
        ratio = (overhead[f"{kind} durable"] + bare_median[kind]) / (
            overhead[f"{kind} recorded"] + bare_median[kind]
        )
        print(f"write-ahead per {kind} call: {cost:.1f} µs (durable/recorded median {ratio:.2f}x)")
    for name in ("10 indexed", "10 evaluated"):
        verdict = "met" if overhead[name] <= APPROVAL_TARGET_US else "MISSED"
        print(
            f"approval gate, {name} rules that do not match: {overhead[name]:.1f} µs per call "
            f"(target <= {APPROVAL_TARGET_US:g} µs: {verdict})"
        )
    by_name = {variant.name: variant for variant in variants}
    for variant in variants:
        # Every traced call made its span; no call made one with tracing off.
        expected = len(variant.samples) if "traced" in variant.name else 0
        assert variant.spans == expected, (variant.name, variant.spans, expected)
    for kind in ("llm", "tool"):
        for on, what in (("traced", "gates"), ("rec traced", "recorded")):
            off_median = by_name[f"{kind} {what}"].summary()[0]
            on_median = by_name[f"{kind} {on}"].summary()[0]
            added = on_median - off_median
            line = (
                f"tracing per {kind} call ({what}): on {on_median:.1f} µs, off {off_median:.1f} "
                f"µs, added per call {added:.1f} µs (on/off {on_median / off_median:.2f}x"
            )
            if what == "gates":
                verdict = "met" if added <= TRACING_TARGET_US else "MISSED"
                line += f"; target <= {TRACING_TARGET_US:g} µs: {verdict}"
            print(line + ")")


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())
