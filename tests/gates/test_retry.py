"""The retry gate: backoff with jitter, Retry-After, caps on attempts and waiting, a budget."""

from __future__ import annotations

import asyncio
import bisect
import random

import pytest

from corral.calls import Call, Halt, HaltReason, LLMCall, LLMResult, Result, ToolCall, Usage
from corral.gates.base import RunContext
from corral.gates.retry import RetryGate, backoff
from corral.policy import Retry
from corral.providers.base import FailureKind, ProviderError
from corral.state import MemoryCounters

from .conftest import context, messages, policy


class Script:
    """A transport that fails with the given errors, then answers."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self, call: Call, ctx: RunContext) -> Result:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return LLMResult("ok", Usage(1, 1), model="m")


class Sleeps:
    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


def gate(sleeps: Sleeps, draw: float = 0.5, counters: MemoryCounters | None = None) -> RetryGate:
    return RetryGate(counters or MemoryCounters(), sleep=sleeps, draw=lambda: draw)


def down(
    kind: FailureKind = FailureKind.UNAVAILABLE, retry_after: float | None = None
) -> ProviderError:
    return ProviderError(kind, "upstream trouble", retry_after=retry_after)


RETRY = """
retry: {max_attempts: 4, base_delay: 1s, max_delay: 4s, jitter: full, max_total_wait: 10s}
"""
TIGHT_BUDGET = """
retry: {max_attempts: 4, base_delay: 1s, budget: 0.5, budget_window: 10s, budget_min: 2}
"""


def ctx_with(retry: str = RETRY) -> RunContext:
    from .conftest import POLICY

    return context(policy(POLICY + retry))


async def test_transient_failures_are_retried_with_exponential_full_jitter() -> None:
    sleeps, transport = Sleeps(), Script(down(), down(FailureKind.TIMEOUT), down())
    result = await gate(sleeps)(LLMCall("r", messages()), ctx_with(), transport)
    assert isinstance(result, LLMResult) and transport.calls == 4
    assert sleeps.pauses == [0.5, 1.0, 2.0]  # half of 1, 2, 4 s with the draw at 0.5


@pytest.mark.parametrize(
    "kind", [FailureKind.BAD_REQUEST, FailureKind.AUTH, FailureKind.CONTENT_POLICY,
             FailureKind.CONTEXT_LENGTH],
)  # fmt: skip
async def test_client_side_failures_are_never_retried(kind: FailureKind) -> None:
    sleeps, transport = Sleeps(), Script(down(kind))
    with pytest.raises(ProviderError):
        await gate(sleeps)(LLMCall("r", messages()), ctx_with(), transport)
    assert transport.calls == 1 and sleeps.pauses == []


async def test_a_halt_is_never_retried() -> None:
    sleeps, transport = Sleeps(), Script(Halt(HaltReason.BUDGET_COST, "cap"))
    with pytest.raises(Halt):
        await gate(sleeps)(LLMCall("r", messages()), ctx_with(), transport)
    assert transport.calls == 1


async def test_retry_after_is_a_floor_with_jitter_on_top() -> None:
    sleeps, transport = Sleeps(), Script(down(FailureKind.RATE_LIMITED, retry_after=3.0))
    await gate(sleeps, draw=0.25)(LLMCall("r", messages()), ctx_with(), transport)
    assert sleeps.pauses == [3.0 + 0.25]


async def test_attempts_are_capped_and_the_last_failure_surfaces() -> None:
    sleeps = Sleeps()
    transport = Script(*(down() for _ in range(10)))
    with pytest.raises(ProviderError, match="upstream trouble"):
        await gate(sleeps)(LLMCall("r", messages()), ctx_with(), transport)
    assert transport.calls == 4 and len(sleeps.pauses) == 3


async def test_total_wait_is_capped() -> None:
    sleeps = Sleeps()
    transport = Script(*(down(FailureKind.RATE_LIMITED, retry_after=4.0) for _ in range(10)))
    with pytest.raises(ProviderError):
        await gate(sleeps, draw=0.0)(LLMCall("r", messages()), ctx_with(), transport)
    assert sum(sleeps.pauses) <= 10.0
    assert sleeps.pauses == [4.0, 4.0]  # a third 4 s pause would pass max_total_wait


async def test_no_retry_once_the_caller_has_bytes() -> None:
    sleeps = Sleeps()
    call = LLMCall("r", messages())
    call.delivered = True
    transport = Script(down())
    with pytest.raises(ProviderError):
        await gate(sleeps)(call, ctx_with(), transport)
    assert transport.calls == 1


async def test_tools_are_not_retried() -> None:
    sleeps, transport = Sleeps(), Script(down())
    with pytest.raises(ProviderError):
        await gate(sleeps)(ToolCall("lookup", {}), ctx_with(), transport)
    assert transport.calls == 1


async def test_retry_budget_limits_retries_per_provider() -> None:
    counters, sleeps = MemoryCounters(), Sleeps()
    retry_gate = gate(sleeps, counters=counters)
    ctx = ctx_with(TIGHT_BUDGET)
    # Every call fails once; the window allows max(2, 0.5 * calls so far) retries, and a
    # refused retry still counts against it, so a storm backs off hard.
    outcomes = []
    for _ in range(4):
        try:
            await retry_gate(LLMCall("r", messages()), ctx, Script(down()))
            outcomes.append("ok")
        except ProviderError:
            outcomes.append("failed")
    assert outcomes == ["ok", "ok", "failed", "failed"]
    assert len(sleeps.pauses) == 2


def test_backoff_shapes() -> None:
    settings = Retry(base_delay="1s", max_delay="8s", jitter="none")
    assert [backoff(settings, n, lambda: 0.9) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 8]
    equal = Retry(base_delay="1s", max_delay="8s", jitter="equal")
    assert backoff(equal, 3, lambda: 0.0) == 2.0 and backoff(equal, 3, lambda: 1.0) == 4.0


async def test_a_crowd_that_got_the_same_429_comes_back_spread_out() -> None:
    """100 callers hit 429 with Retry-After: 1 at once; their retries must not bunch up."""
    pauses = Sleeps()  # all start together, so a pause is the retry's time
    retry_gate = RetryGate(MemoryCounters(), sleep=pauses, draw=random.Random(42).random)
    ctx = ctx_with("retry: {max_attempts: 2, base_delay: 1s, jitter: full, budget: 1.0}\n")

    class FailsOnce:
        def __init__(self) -> None:
            self.failed = False

        async def __call__(self, call: Call, ctx: RunContext) -> Result:
            if not self.failed:
                self.failed = True
                raise down(FailureKind.RATE_LIMITED, retry_after=1.0)
            return LLMResult("ok", Usage(1, 1), model="m")

    calls = (retry_gate(LLMCall("r", messages()), ctx, FailsOnce()) for _ in range(100))
    await asyncio.gather(*calls)
    wake_times = sorted(pauses.pauses)
    assert len(wake_times) == 100
    assert wake_times[0] >= 1.0  # Retry-After honoured by every one
    densest = max(
        bisect.bisect_right(wake_times, start + 0.010) - index
        for index, start in enumerate(wake_times)
    )
    assert densest < 10, f"{densest} retries within 10 ms"
