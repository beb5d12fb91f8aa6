"""Per-call cost of the resilience gates (rate-limit share, route, retry, circuit breaker)
on the success path, against the bare adapter, in one run.

Two settings, each timed call by call in interleaved rounds after a warm-up:

  in-process  the gates around a transport that answers at once: their own cost, alone
  loopback    the real OpenAI adapter on its pooled aiohttp client, to the simulated
              provider in another process, bare and behind the gates: what a caller sees

Run: .venv/bin/python bench/resilience.py
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
from pathlib import Path

from corral.calls import Call, LLMCall, Result
from corral.gates.base import RunContext, compose
from corral.gates.breaker import BreakerGate
from corral.gates.ratelimit import RateLimitGate
from corral.gates.retry import RetryGate
from corral.gates.route import RouteGate
from corral.providers.http import HttpClient
from corral.providers.openai import OpenAIAdapter
from corral.state import MemoryCounters, SQLiteStore
from corral.telemetry.audit import AuditLog
from pipeline import (  # sibling scripts: run from the repository root as above
    MESSAGES,
    Variant,
    bare_llm,
    bench_policy,
    context,
    loop_factory,
    measure,
)
from sim_throughput import SIM_SERVER, start_server, stop_server

ROUNDS = 10
IN_PROCESS_PER_ROUND = 2_000
LOOPBACK_PER_ROUND = 300
WARM_UP = 500


def llm() -> Call:
    return LLMCall("default", MESSAGES, max_tokens=64)


async def main() -> None:
    sim, port = start_server(SIM_SERVER)
    try:
        with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
            policy = bench_policy(Path(tmp))
            store = SQLiteStore(Path(tmp) / "corral.db")
            counters = MemoryCounters()
            gates = [
                RateLimitGate(counters),
                RouteGate(AuditLog(store)),
                RetryGate(counters),
                BreakerGate(counters),
            ]
            client = HttpClient()
            adapter = OpenAIAdapter(client, f"http://127.0.0.1:{port}/v1", "bench", 10.0)

            async def over_loopback(call: Call, ctx: RunContext) -> Result:
                assert isinstance(call, LLMCall)
                name = call.target or "smart"
                return await adapter.complete(name, ctx.policy.models[name], call)

            ctx = context(policy, "run_bench")
            bare = Variant("in-process bare", bare_llm, ctx, llm, IN_PROCESS_PER_ROUND)
            wire = Variant("loopback bare", over_loopback, ctx, llm, LOOPBACK_PER_ROUND)
            variants = [
                bare,
                Variant(
                    "in-process gates", compose(gates, bare_llm), ctx, llm,
                    IN_PROCESS_PER_ROUND, bare,
                ),
                wire,
                Variant(
                    "loopback gates", compose(gates, over_loopback), ctx, llm,
                    LOOPBACK_PER_ROUND, wire,
                ),
            ]  # fmt: skip
            for variant in variants:
                await measure(variant, WARM_UP, keep=False)
            for _ in range(ROUNDS):
                for variant in variants:
                    gc.collect()
                    await measure(variant, variant.per_round, keep=True)
            await client.close()
            await store.close()
    finally:
        stop_server(sim)

    print("corral resilience gates (rate limit, route, retry, breaker), success path, per call")
    print(f"{'variant':<18} {'calls':>6} {'median µs':>10} {'p99 µs':>8} {'added µs':>9}")
    for variant in variants:
        median, p99 = variant.summary()
        added = "-"
        if variant.baseline is not None:
            added = f"{median - variant.baseline.summary()[0]:.1f}"
        print(
            f"{variant.name:<18} {len(variant.samples):>6} {median:>10.1f} {p99:>8.1f} {added:>9}"
        )


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())
