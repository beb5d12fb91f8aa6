"""The rate-limit gate: buckets per agent and per provider, bounded waits, priority order.

Every test runs on an event loop whose clock jumps to the next timer whenever nothing
is ready, and the counters read that clock: a one-minute bucket refills in no wall
time, and the times asserted are exact virtual times, never wall-clock bounds.
"""

from __future__ import annotations

import asyncio
import functools
import selectors
import statistics
from collections.abc import Callable, Coroutine
from string import Template
from typing import Any

import pytest

from corral.calls import (
    Call,
    LLMCall,
    LLMResult,
    Result,
    ToolCall,
    ToolResult,
    Usage,
    estimate_input_tokens,
)
from corral.gates.base import RunContext, compose
from corral.gates.budget import BudgetGate
from corral.gates.ratelimit import DEFAULT_MAX_WAIT, RateLimited, RateLimitGate
from corral.policy import Policy, PolicyError, parse_policy
from corral.state import MemoryCounters

from .conftest import Echo, context, messages, policy

# $quota is provider p's requests_per_minute (q has none); $wait is every rate_limit's max_wait.
LIMITS = Template("""
version: 1
providers:
  p: {kind: openai, base_url: "http://127.0.0.1:9/v1"$quota}
  q: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  m: {provider: p, model: test-model, context_window: 100000, max_output_tokens: 1000}
  n: {provider: q, model: test-other, context_window: 100000, max_output_tokens: 1000}
routes: {r: [m], other: [n]}
tools: {lookup: {scope: read}}
agent_types:
  worker: {}
  capped: {session: {tokens: 3000}}
agents:
  rpm:
    type: worker
    route: r
    tools: [lookup]
    rate_limit: {requests_per_minute: 60, max_wait: $wait}
  tpm: {type: worker, route: r, rate_limit: {tokens_per_minute: 6000, max_wait: $wait}}
  both:
    type: worker
    route: r
    rate_limit: {requests_per_minute: 1, tokens_per_minute: 6000, max_wait: $wait}
  clamped: {type: capped, route: r, rate_limit: {tokens_per_minute: 6000, max_wait: $wait}}
  free: {type: worker, route: r, tools: [lookup]}
  elsewhere: {type: worker, route: other}
  hi: {type: worker, route: r, rate_limit: {priority: high, max_wait: $wait}}
  mid: {type: worker, route: r, rate_limit: {priority: normal, max_wait: $wait}}
  lo: {type: worker, route: r, rate_limit: {priority: low, max_wait: $wait}}
""")


def limits_text(provider_rpm: int | None = None, max_wait: str = "5s") -> str:
    quota = "" if provider_rpm is None else f", requests_per_minute: {provider_rpm}"
    return LIMITS.substitute(quota=quota, wait=max_wait)


def limits(provider_rpm: int | None = None, max_wait: str = "5s") -> Policy:
    return policy(limits_text(provider_rpm, max_wait))


SNAPSHOT = limits()


class _JumpingSelector(selectors.DefaultSelector):
    """Polls instead of blocking, and moves the virtual clock on by the time it would block."""

    now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        if timeout is None:
            raise RuntimeError("deadlock: nothing is ready and no timer is set")
        self.now += timeout
        return super().select(0)


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now


def virtual_time(
    test: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., None]:
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        with asyncio.Runner(loop_factory=VirtualLoop) as runner:
            runner.run(test(*args, **kwargs))

    return run


def now() -> float:
    return asyncio.get_running_loop().time()


def counters() -> MemoryCounters:
    return MemoryCounters(clock=now)


def ctx(agent: str, snapshot: Policy = SNAPSHOT) -> RunContext:
    return context(snapshot, agent=agent)


def llm(label: str = "hello", max_tokens: int | None = 10, model: str = "r") -> LLMCall:
    return LLMCall(model, messages(label), max_tokens=max_tokens)


class Served:
    """A transport that notes which call it served, and when."""

    def __init__(self) -> None:
        self.log: list[tuple[str, float]] = []

    async def __call__(self, call: Call, ctx: RunContext) -> Result:
        assert isinstance(call, LLMCall)
        self.log.append((call.messages[0]["content"], now()))
        return LLMResult("ok", Usage(1, 1), model="m")

    @property
    def order(self) -> list[str]:
        return [label for label, _ in self.log]

    def at(self, label: str) -> float:
        return dict(self.log)[label]


async def drain(gate: RateLimitGate, agent: str, calls: int, snapshot: Policy = SNAPSHOT) -> None:
    for _ in range(calls):
        await gate(llm(), ctx(agent, snapshot), Echo())


# --- agent buckets ----------------------------------------------------------------


@virtual_time
async def test_calls_within_the_limit_pass_at_once() -> None:
    gate, echo = RateLimitGate(counters()), Echo()
    for _ in range(60):  # a minute's allowance is the burst
        await gate(llm(), ctx("rpm"), echo)
    assert len(echo.calls) == 60
    assert now() == 0.0


@virtual_time
async def test_a_call_over_the_limit_waits_for_the_refill_and_goes_through() -> None:
    gate, served = RateLimitGate(counters()), Served()
    await drain(gate, "rpm", 60)
    await gate(llm("61st"), ctx("rpm"), served)
    assert served.order == ["61st"]
    assert served.at("61st") == pytest.approx(1.0)  # 60 a minute: one more each second


@virtual_time
async def test_past_max_wait_the_caller_gets_rate_limited_at_once_and_nothing_is_sent() -> None:
    gate, echo, snapshot = RateLimitGate(counters()), Echo(), limits(max_wait="500ms")
    await drain(gate, "rpm", 60, snapshot)
    with pytest.raises(RateLimited) as caught:
        await gate(llm(), ctx("rpm", snapshot), echo)
    error = caught.value
    assert echo.calls == []
    assert now() == 0.0  # the wait would be 1 s, past the bound: no point sleeping through it
    assert error.agent == "rpm"
    assert error.retry_after == pytest.approx(1.0)
    assert error.rule == "agents.rpm.rate_limit.requests_per_minute"
    assert "rpm" in str(error) and "1.000s" in str(error) and "past the 0.5s" in str(error)
    # The refused call took nothing: after retry_after the next one goes through.
    assert error.retry_after is not None
    await asyncio.sleep(error.retry_after)
    await gate(llm(), ctx("rpm", snapshot), echo)
    assert len(echo.calls) == 1


@virtual_time
async def test_a_zero_max_wait_never_waits() -> None:
    gate, snapshot = RateLimitGate(counters()), limits(max_wait="0s")
    await drain(gate, "rpm", 60, snapshot)
    with pytest.raises(RateLimited):
        await gate(llm(), ctx("rpm", snapshot), Echo())
    assert now() == 0.0


class FullUse(Echo):
    """A transport whose calls use their whole worst case, so nothing goes back."""

    async def __call__(self, call: Call, ctx: RunContext) -> Result:
        await super().__call__(call, ctx)
        assert isinstance(call, LLMCall)
        out = call.max_tokens if call.max_tokens is not None else 1000  # m's maximum
        return LLMResult("ok", Usage(estimate_input_tokens(call), out), model="m")


@virtual_time
async def test_tokens_per_minute_count_the_input_bound_plus_max_tokens() -> None:
    gate, echo = RateLimitGate(counters()), FullUse()  # tpm may wait 5 s of the 30 s it needs
    call = llm(max_tokens=0)
    out = 3000 - estimate_input_tokens(call)  # each call's worst case: 3000 of the 6000
    for _ in range(2):
        await gate(llm(max_tokens=out), ctx("tpm"), echo)
    with pytest.raises(RateLimited) as caught:
        await gate(llm(max_tokens=out), ctx("tpm"), echo)
    assert len(echo.calls) == 2
    assert caught.value.retry_after == pytest.approx(30.0)  # 3000 tokens at 100 a second
    assert caught.value.rule == "agents.tpm.rate_limit.tokens_per_minute"


@virtual_time
async def test_without_max_tokens_a_call_counts_the_models_own_maximum() -> None:
    gate, echo, snapshot = RateLimitGate(counters()), FullUse(), limits(max_wait="0s")
    need = estimate_input_tokens(llm()) + 1000  # m's max_output_tokens
    calls = 6000 // need
    for _ in range(calls):
        await gate(llm(max_tokens=None), ctx("tpm", snapshot), echo)
    with pytest.raises(RateLimited):
        await gate(llm(max_tokens=None), ctx("tpm", snapshot), echo)
    assert len(echo.calls) == calls


@virtual_time
async def test_tokens_per_minute_count_the_max_tokens_the_budget_gate_clamped() -> None:
    shared = counters()
    pipeline = compose([BudgetGate(shared), RateLimitGate(shared)], Echo())
    call = llm(max_tokens=50_000)  # far past the 6000 a minute, but the session pays 3000
    result = await pipeline(call, ctx("clamped", limits(max_wait="0s")))
    assert isinstance(result, LLMResult)
    assert call.max_tokens is not None and call.max_tokens < 3000
    # Unclamped, the same call could never be served.
    with pytest.raises(RateLimited):
        await RateLimitGate(counters())(llm(max_tokens=50_000), ctx("clamped"), Echo())


@virtual_time
async def test_a_call_bigger_than_the_bucket_fails_at_once_and_takes_nothing() -> None:
    gate, echo = RateLimitGate(counters()), Echo()
    with pytest.raises(RateLimited) as caught:
        await gate(llm(max_tokens=6000), ctx("both"), echo)
    error = caught.value
    need = estimate_input_tokens(llm()) + 6000
    assert error.retry_after is None  # no wait would ever serve it
    assert error.agent == "both"
    assert f"up to {need} tokens" in str(error) and "tokens_per_minute of 6000" in str(error)
    assert echo.calls == [] and now() == 0.0
    # Its single request a minute is still there for a call that fits.
    await gate(llm(), ctx("both"), echo)
    assert len(echo.calls) == 1 and now() == 0.0


@virtual_time
async def test_tool_calls_and_agents_without_limits_pass_straight_through() -> None:
    gate, echo = RateLimitGate(counters()), Echo()
    snapshot = limits(provider_rpm=1, max_wait="0s")
    await gate(llm(), ctx("rpm", snapshot), echo)  # p's one request a minute
    with pytest.raises(RateLimited):
        await gate(llm(), ctx("rpm", snapshot), echo)
    for _ in range(100):
        result = await gate(ToolCall("lookup", {}), ctx("rpm", snapshot), echo)
        assert isinstance(result, ToolResult)
    for _ in range(100):  # route `other` runs on q, which has no limit
        await gate(llm(model="other"), ctx("elsewhere", snapshot), echo)
    assert len(echo.calls) == 201
    assert now() == 0.0


@virtual_time
async def test_each_agent_has_buckets_of_its_own() -> None:
    gate, echo, snapshot = RateLimitGate(counters()), Echo(), limits(max_wait="0s")
    await drain(gate, "rpm", 60, snapshot)
    await gate(llm(), ctx("both", snapshot), echo)  # its own one request a minute
    await gate(llm(), ctx("tpm", snapshot), echo)
    assert len(echo.calls) == 2


# --- the shared provider bucket and priority ------------------------------------------


@virtual_time
async def test_a_provider_limit_counts_every_agents_calls() -> None:
    gate, echo = RateLimitGate(counters()), Echo()
    snapshot = limits(provider_rpm=2, max_wait="0s")
    await gate(llm(), ctx("free", snapshot), echo)
    await gate(llm(), ctx("tpm", snapshot), echo)
    with pytest.raises(RateLimited) as caught:
        await gate(llm(), ctx("hi", snapshot), echo)
    assert caught.value.rule == "providers.p.requests_per_minute"
    assert caught.value.retry_after == pytest.approx(30.0)
    assert len(echo.calls) == 2


@virtual_time
async def test_on_a_saturated_provider_high_priority_calls_are_served_first() -> None:
    gate, served = RateLimitGate(counters()), Served()
    snapshot = limits(provider_rpm=60, max_wait="10s")
    await drain(gate, "free", 60, snapshot)
    arrivals = ["lo1", "hi1", "lo2", "hi2", "lo3", "hi3"]  # the low ones come first
    await asyncio.gather(
        *(gate(llm(label), ctx(label[:2], snapshot), served) for label in arrivals)
    )
    assert served.order == ["hi1", "hi2", "hi3", "lo1", "lo2", "lo3"]
    # All arrived at 0, so the time each was served is its wait.
    high = statistics.mean(served.at(label) for label in arrivals if label.startswith("hi"))
    low = statistics.mean(served.at(label) for label in arrivals if label.startswith("lo"))
    assert high < low


@virtual_time
async def test_a_high_priority_arrival_overtakes_a_low_caller_already_waiting() -> None:
    gate, served = RateLimitGate(counters()), Served()
    snapshot = limits(provider_rpm=60, max_wait="10s")
    await drain(gate, "free", 60, snapshot)
    low = asyncio.create_task(gate(llm("lo"), ctx("lo", snapshot), served))
    await asyncio.sleep(0.5)  # the low call has been waiting half its refill
    await gate(llm("hi"), ctx("hi", snapshot), served)
    await low
    assert served.order == ["hi", "lo"]
    assert served.at("hi") == pytest.approx(1.0)
    assert served.at("lo") == pytest.approx(2.0)


@virtual_time
async def test_callers_of_one_priority_are_served_in_arrival_order() -> None:
    gate, served = RateLimitGate(counters()), Served()
    snapshot = limits(provider_rpm=60, max_wait="10s")
    await drain(gate, "free", 60, snapshot)
    # Both rank normal; free, without a rate_limit, may wait DEFAULT_MAX_WAIT: 5 s, 4 calls.
    labels = [f"{agent}{i}" for i in range(2) for agent in ("free", "mid")]
    await asyncio.gather(*(gate(llm(label), ctx(label[:-1], snapshot), served) for label in labels))
    assert served.order == labels
    assert [at for _, at in served.log] == pytest.approx([1.0 + i for i in range(len(labels))])


@virtual_time
async def test_a_queued_caller_gives_up_at_its_own_bound_with_the_queue_in_retry_after() -> None:
    gate, served = RateLimitGate(counters()), Served()
    snapshot = limits(provider_rpm=60, max_wait="1.5s")
    await drain(gate, "free", 60, snapshot)
    # Alone, the low call would be served at 1.0.
    low = asyncio.create_task(gate(llm("lo"), ctx("lo", snapshot), served))
    await asyncio.sleep(0.9)
    first = asyncio.create_task(gate(llm("hi1"), ctx("hi", snapshot), served))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(gate(llm("hi2"), ctx("hi", snapshot), served))
    with pytest.raises(RateLimited) as caught:
        await low
    assert now() == pytest.approx(1.5)  # its bound, while hi2 still waits its turn
    assert caught.value.agent == "lo"
    # hi2 is due at 2.0, then lo needs a refill of its own: 0.5 + 1.0 from now.
    assert caught.value.retry_after == pytest.approx(1.5)
    await asyncio.gather(first, second)
    assert served.order == ["hi1", "hi2"]
    assert (served.at("hi1"), served.at("hi2")) == pytest.approx((1.0, 2.0))


@virtual_time
async def test_a_cancelled_waiter_leaves_the_room_and_blocks_no_one() -> None:
    gate, served = RateLimitGate(counters()), Served()
    snapshot = limits(provider_rpm=60, max_wait="10s")
    await drain(gate, "free", 60, snapshot)
    head = asyncio.create_task(gate(llm("head"), ctx("hi", snapshot), served))
    middle = asyncio.create_task(gate(llm("middle"), ctx("mid", snapshot), served))
    last = asyncio.create_task(gate(llm("last"), ctx("lo", snapshot), served))
    await asyncio.sleep(0.25)
    middle.cancel()
    head.cancel()  # the head, too: the next in line must take over polling the bucket
    await asyncio.gather(head, middle, return_exceptions=True)
    await last
    assert served.order == ["last"]
    assert served.at("last") == pytest.approx(1.0)  # the cancelled took nothing
    await gate(llm("after"), ctx("free", snapshot), served)  # an empty room: after its refill
    assert served.at("after") == pytest.approx(2.0)


@virtual_time
async def test_a_small_call_does_not_jump_the_queue_ahead_of_a_big_one() -> None:
    gate, served, snapshot = RateLimitGate(counters()), Served(), limits(max_wait="1m")
    out = 3000 - estimate_input_tokens(llm("big", max_tokens=0))
    for _ in range(2):  # tpm's 6000 spent
        await gate(llm("big", max_tokens=out), ctx("tpm", snapshot), FullUse())
    big = asyncio.create_task(gate(llm("big", max_tokens=out), ctx("tpm", snapshot), served))
    await asyncio.sleep(10)  # 1000 tokens back: enough for a small call, not for the big one
    small = llm("small", max_tokens=10)
    await gate(small, ctx("tpm", snapshot), served)
    await big
    assert served.order == ["big", "small"]
    assert served.at("big") == pytest.approx(30.0)
    # Big used little of what it took, so its refund serves small at once, never before.
    assert served.at("small") == pytest.approx(30.0)


@virtual_time
async def test_a_waiter_on_its_own_bucket_holds_no_place_in_the_provider_queue() -> None:
    gate, served = RateLimitGate(counters()), Served()
    snapshot = limits(provider_rpm=60, max_wait="10s")
    await drain(gate, "rpm", 60, snapshot)  # also takes 60 of p's 60
    waiting = asyncio.create_task(gate(llm("rpm"), ctx("rpm", snapshot), served))
    await asyncio.sleep(0)
    await gate(llm("free"), ctx("free", snapshot), served)
    await waiting
    # Both refill at 1/s; the free call queued for p first and gets p's first token.
    assert served.order == ["free", "rpm"]


# --- settings from the policy snapshot ---------------------------------------------


@virtual_time
async def test_an_agent_without_a_rate_limit_waits_on_a_provider_at_most_the_default() -> None:
    gate, served, snapshot = RateLimitGate(counters()), Served(), limits(provider_rpm=15)
    await drain(gate, "free", 15, snapshot)  # p refills one request every 4 s
    first = asyncio.create_task(gate(llm("first"), ctx("free", snapshot), served))
    await asyncio.sleep(0)  # first in the queue
    with pytest.raises(RateLimited) as caught:
        await gate(llm("second"), ctx("free", snapshot), served)
    await first
    assert served.order == ["first"] and served.at("first") == pytest.approx(4.0)
    # Head at 4.0, the second would be served at 8.0: past its bound of 0 + 5 s.
    assert now() == pytest.approx(4.0)
    assert caught.value.rule == "providers.p.requests_per_minute"
    assert caught.value.retry_after == pytest.approx(4.0)
    assert f"past the {DEFAULT_MAX_WAIT}s it may wait" in str(caught.value)


@virtual_time
async def test_one_gate_follows_the_quota_and_the_bound_of_each_calls_snapshot() -> None:
    gate, served = RateLimitGate(counters()), Served()
    strict = limits(provider_rpm=1, max_wait="0s")
    await gate(llm("1st"), ctx("hi", strict), served)  # p's one request a minute
    with pytest.raises(RateLimited):
        await gate(llm("refused"), ctx("hi", strict), served)
    patient = limits(provider_rpm=1, max_wait="2m")  # a reload: same quota, longer bound
    await gate(llm("2nd"), ctx("hi", patient), served)
    unlimited = limits()  # a reload that drops p's quota
    for label in ("3rd", "4th"):
        await gate(llm(label), ctx("hi", unlimited), served)
    assert served.order == ["1st", "2nd", "3rd", "4th"]
    assert [at for _, at in served.log] == pytest.approx([0.0, 60.0, 60.0, 60.0])


@pytest.mark.parametrize(
    ("provider_rpm", "max_wait", "key", "message"),
    [
        (0, "5s", "providers.p.requests_per_minute", "must be at least 1"),
        (None, "-1s", "agents.rpm.rate_limit.max_wait", "expected a duration"),
        (None, "soon", "agents.rpm.rate_limit.max_wait", "expected a duration"),
    ],
)
def test_bad_limits_are_refused_at_policy_load_naming_the_key(
    provider_rpm: int | None, max_wait: str, key: str, message: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(limits_text(provider_rpm, max_wait), env={})
    issues = {issue.path: issue.message for issue in caught.value.issues}
    assert key in issues and message in issues[key]
    assert key in str(caught.value)


async def test_unused_tokens_go_back_to_the_bucket() -> None:
    """The bucket pays a call's worst case up front and gets back what it did not use."""
    shared = MemoryCounters()
    snapshot = policy(
        "version: 1\n"
        "providers: {p: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}}\n"
        "models: {m: {provider: p, model: x, context_window: 9000, max_output_tokens: 400}}\n"
        "routes: {r: [m]}\n"
        "agent_types: {t: {}}\n"
        "agents: {a: {type: t, route: r, rate_limit: {tokens_per_minute: 1000, max_wait: 0s}}}\n"
    )
    gate = RateLimitGate(shared)
    call_ctx = context(snapshot)
    echo = Echo(output_tokens=1)
    for _ in range(20):  # each worst case is ~420 tokens; each call uses 6 (5 in, 1 out)
        await gate(LLMCall("r", messages()), call_ctx, echo)
    assert len(echo.calls) == 20  # 20 worst cases are 8400 of 1000: only refunds let them in
    with pytest.raises(RateLimited):  # and a call that uses all it took gets nothing back
        for _ in range(3):
            await gate(LLMCall("r", messages()), call_ctx, FullUse())
