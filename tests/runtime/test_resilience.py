"""Resilience end to end: the SDK against the simulated provider's injected faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral import Halted, HaltReason, Supervisor
from corral.providers.base import ProviderError
from corral.providers.sim import Fault, FaultKind, SimProvider

from .conftest import example_policy

HELLO = [{"role": "user", "content": "hello"}]
# Fast retries and a small breaker, so faults play out in well under a second.
RESILIENCE = {
    "base_delay: 1s, max_delay: 8s,": "base_delay: 10ms, max_delay: 20ms,",
    "max_total_wait: 30s": "max_total_wait: 500ms",
    "breaker: {window: 20, min_calls: 10,": "breaker: {window: 4, min_calls: 4,",
    "open_for: 30s, half_open_probes: 3}": "open_for: 300ms, half_open_probes: 1}",
    "slow_call: 10s": "slow_call: 80ms",
    "slow_rate: 0.8": "slow_rate: 0.5",
    # Rate-limit shares have their own tests; here they would only slow the crowd down.
    "rate_limit: {requests_per_minute: 600, tokens_per_minute: 200000, priority: high}": (
        "rate_limit: {priority: high}"
    ),
    # These runs ask the same question over and over on purpose; the loop gate would
    # rightly stop them (it has its own tests), so here it only warns.
    "error_repeat: 3}": "error_repeat: 3, action: warn}",
}


@pytest.fixture
async def resilient(
    tmp_path: Path, sim: SimProvider, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Supervisor]:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    supervisor = Supervisor.from_policy(example_policy(tmp_path, sim, RESILIENCE))
    yield supervisor
    await supervisor.close()


def requests_to(sim: SimProvider, model: str) -> int:
    return sim.requests[f"/v1/chat/completions {model}"]


async def test_429_storm_waits_as_told_caps_the_wait_and_fails_cleanly(
    resilient: Supervisor, sim: SimProvider
) -> None:
    storm = Fault(FaultKind.RATE_LIMIT, retry_after=0.2)
    sim.set_fault("gpt-4o", storm)
    sim.set_fault("gpt-4o-mini", storm)
    started = time.monotonic()
    with pytest.raises(Halted) as caught:
        async with resilient.run(agent="support") as run:
            await run.chat("default", HELLO, max_tokens=10)
    elapsed = time.monotonic() - started
    # Per model: 0.2 s + jitter twice fits the 500 ms cap, a third pause would not.
    assert requests_to(sim, "gpt-4o") == 3 and requests_to(sim, "gpt-4o-mini") == 3
    assert elapsed >= 4 * 0.2  # every Retry-After was honoured
    assert caught.value.reason is HaltReason.PROVIDER_UNAVAILABLE
    tried = caught.value.packet["rule"]["tried"]
    assert [(t["model"], t["failure"]) for t in tried] == [
        ("smart", "rate_limited"),
        ("fast", "rate_limited"),
    ]
    assert (await resilient.store.get_run(run.id)).halt_reason == "provider_unavailable"  # type: ignore[union-attr]


async def test_breaker_opens_probes_closes_and_reopens(
    resilient: Supervisor, sim: SimProvider
) -> None:
    sim.set_fault("gpt-4o", Fault(FaultKind.ERROR, status=503))
    async with resilient.run(agent="support") as run:
        for _ in range(4):  # smart fails every attempt, fast answers
            reply = await run.chat("default", HELLO, max_tokens=10)
            assert reply.model == "fast"
        sent = requests_to(sim, "gpt-4o")
        assert sent >= 4
        reply = await run.chat("default", HELLO, max_tokens=10)
        assert reply.model == "fast"
        assert requests_to(sim, "gpt-4o") == sent  # open: smart was not even asked

        await asyncio.sleep(0.35)  # open_for passes: one trial call, which fails again
        await run.chat("default", HELLO, max_tokens=10)
        assert requests_to(sim, "gpt-4o") == sent + 1
        await run.chat("default", HELLO, max_tokens=10)
        assert requests_to(sim, "gpt-4o") == sent + 1  # re-opened by the failed probe

        sim.set_fault("gpt-4o", None)  # smart recovers
        await asyncio.sleep(0.35)
        reply = await run.chat("default", HELLO, max_tokens=10)
        assert reply.model == "smart"  # the probe answered: closed
        reply = await run.chat("default", HELLO, max_tokens=10)
        assert reply.model == "smart"
    steps = await resilient.store.list_steps(run.id)
    assert [s.model_used for s in steps][-2:] == ["smart", "smart"]
    # The first call's own retries opened the breaker, so smart's fallbacks say so.
    fallbacks = [e for e in await resilient.store.list_audit() if e.kind == "run.fallback"]
    assert fallbacks and {e.payload["failure"] for e in fallbacks} == {"circuit_open"}


async def test_slow_calls_trip_the_breaker(resilient: Supervisor, sim: SimProvider) -> None:
    sim.set_fault("gpt-4o", Fault(FaultKind.SLOW_FIRST_BYTE, delay=0.12))
    async with resilient.run(agent="support") as run:
        for _ in range(4):  # slow but successful
            assert (await run.chat("default", HELLO, max_tokens=10)).model == "smart"
        reply = await run.chat("default", HELLO, max_tokens=10)
    assert reply.model == "fast"  # the breaker opened on the slow-call rate
    assert requests_to(sim, "gpt-4o") == 4


async def test_a_stream_cut_mid_way_is_counted_and_not_spliced(
    resilient: Supervisor, sim: SimProvider
) -> None:
    sim.set_fault("gpt-4o", Fault(FaultKind.CUT_STREAM, after_chunks=3))
    received: list[str] = []
    with pytest.raises(ProviderError) as caught:
        async with resilient.run(agent="support") as run:
            async for delta in run.stream("default", HELLO, max_tokens=50):
                received.append(delta.text)
    assert caught.value.usage is not None and caught.value.usage.output_tokens > 0
    assert received  # the caller got part of smart's answer...
    assert requests_to(sim, "gpt-4o-mini") == 0  # ...and no second answer spliced on
    steps = await resilient.store.list_steps(run.id)
    assert [s.status for s in steps] == ["error"]
    # What arrived was paid for, and its step and run say so (though it made no step).
    assert steps[0].cost_usd > 0 and steps[0].output_tokens == caught.value.usage.output_tokens
    record = await resilient.store.get_run(run.id)
    assert record is not None and record.cost_usd == steps[0].cost_usd and record.steps == 0
    counters = resilient.counters._counters  # type: ignore[attr-defined]
    assert all(c.held == 0 for c in counters.values())
    assert not [k for k in counters if k.startswith(f"budget:task:{run.id}")]  # dropped


async def test_a_stream_cut_before_the_first_byte_falls_back(
    resilient: Supervisor, sim: SimProvider
) -> None:
    sim.set_fault("gpt-4o", Fault(FaultKind.CUT_STREAM, after_chunks=0))
    async with resilient.run(agent="support") as run:
        stream = run.stream("default", HELLO, max_tokens=50)
        text = "".join([delta.text async for delta in stream])
    assert stream.result is not None and stream.result.model == "fast"
    assert text == stream.result.text and text.startswith("Simulated reply from gpt-4o-mini")


async def test_no_reservation_leaks_after_1000_failed_calls(
    resilient: Supervisor, sim: SimProvider
) -> None:
    sim.set_fault("gpt-4o", Fault(FaultKind.ERROR, status=500))
    sim.set_fault("gpt-4o-mini", Fault(FaultKind.RESET))

    async def failing_run(n: int) -> None:
        async with resilient.run(agent="support", session=f"s{n % 7}") as run:
            await run.chat("default", HELLO, max_tokens=20)

    outcomes = []
    for batch in range(20):
        outcomes += await asyncio.gather(
            *(failing_run(batch * 50 + n) for n in range(50)), return_exceptions=True
        )
    assert len(outcomes) == 1000
    reasons = {o.reason for o in outcomes if isinstance(o, Halted)}
    assert all(isinstance(o, Halted) for o in outcomes)
    assert reasons <= {HaltReason.PROVIDER_UNAVAILABLE, HaltReason.CIRCUIT_OPEN}
    counters = resilient.counters._counters  # type: ignore[attr-defined]
    budget_keys = [key for key in counters if key.startswith("budget:")]
    assert budget_keys
    assert all(counters[key].held == 0 for key in budget_keys)
