"""The budget gate: caps are never crossed at any concurrency, and not over-conservative."""

from __future__ import annotations

import asyncio
import random

import pytest

from corral.calls import (
    Call,
    Halt,
    HaltReason,
    LLMCall,
    LLMResult,
    Result,
    ToolCall,
    Usage,
    estimate_input_tokens,
)
from corral.gates.base import RunContext
from corral.gates.budget import MICRO_USD, BudgetGate, build_caps
from corral.state import MemoryCounters

from .conftest import POLICY, Echo, context, messages, policy

# m: 1 µ$ per input token, 4 µ$ per output token, max 1000 output tokens.
IN_PRICE, OUT_PRICE, MAX_OUT = 1, 4, 1000


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Spender:
    """A transport that takes a little time and uses a random share of what it may."""

    def __init__(self, seed: int = 7) -> None:
        self.random = random.Random(seed)

    async def __call__(self, call: Call, ctx: RunContext) -> Result:
        await asyncio.sleep(self.random.random() / 500)
        assert isinstance(call, LLMCall) and call.max_tokens is not None
        tokens_in = estimate_input_tokens(call) // 4
        out = self.random.randint(1, call.max_tokens)
        return LLMResult("ok", Usage(tokens_in, out), model="m")


def worst_case_usd(call_messages: list[dict[str, str]]) -> float:
    tokens_in = estimate_input_tokens(LLMCall("r", call_messages))
    return (tokens_in * IN_PRICE + MAX_OUT * OUT_PRICE) / MICRO_USD


async def spent(counters: MemoryCounters, key: str) -> float:
    value = await counters.get(key)
    assert value.held == 0, "every hold was settled"
    return value.used / MICRO_USD


async def call_until_halted(gate: BudgetGate, ctx: RunContext, transport: Spender) -> str | None:
    try:
        await gate(LLMCall("r", messages()), ctx, transport)
    except Halt as halt:
        return halt.reason.value
    return None


USD_ONLY = POLICY.replace(
    "session: {usd: 0.05, tokens: 100000, tool_calls: 20, steps: 30}", "session: {usd: 0.05}"
)


async def test_256_concurrent_calls_in_one_session_never_cross_the_usd_cap() -> None:
    counters = MemoryCounters()
    gate, ctx = BudgetGate(counters), context(policy(USD_ONLY))
    outcomes = await asyncio.gather(*(call_until_halted(gate, ctx, Spender(n)) for n in range(256)))
    total = await spent(counters, f"budget:session:{ctx.session}:usd")
    assert total <= 0.05
    assert total >= 0.05 - worst_case_usd(messages())  # not over-conservative
    assert "budget.cost" in outcomes and None in outcomes


async def test_fleet_cap_holds_across_50_sessions() -> None:
    counters = MemoryCounters()
    gate, snapshot = BudgetGate(counters), policy()
    contexts = [context(snapshot) for _ in range(50)]  # 50 sessions of one agent type
    calls = [call_until_halted(gate, ctx, Spender(n)) for n, ctx in enumerate(contexts * 6)]
    outcomes = await asyncio.gather(*calls)
    assert "budget.cost" in outcomes
    fleet = [k for k in counters._counters if k.startswith("budget:fleet:worker:usd")]
    assert len(fleet) == 1
    total = await spent(counters, fleet[0])
    assert total <= 0.2
    assert total >= 0.2 - worst_case_usd(messages())


@pytest.mark.parametrize(
    ("limits", "reason", "calls"),
    [
        ("{tokens: 5000}", "budget.tokens", "llm"),
        ("{steps: 25}", "budget.steps", "llm"),
        ("{tool_calls: 25}", "budget.tool_calls", "tool"),
        ("{steps: 25}", "budget.steps", "tool"),
    ],
)
async def test_each_dimension_is_exact_under_concurrency(
    limits: str, reason: str, calls: str
) -> None:
    snapshot = policy(
        "version: 1\n"
        "providers: {p: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}}\n"
        "models: {m: {provider: p, model: x, context_window: 9000, max_output_tokens: 400}}\n"
        "routes: {r: [m]}\n"
        "tools: {lookup: {scope: read}}\n"
        f"agent_types: {{t: {{session: {limits}}}}}\n"
        "agents: {a: {type: t, route: r, tools: [lookup]}}\n"
    )
    counters, ctx = MemoryCounters(), context(snapshot)
    gate, transport = BudgetGate(counters), Echo()

    async def one(n: int) -> str | None:
        call: Call = LLMCall("r", messages()) if calls == "llm" else ToolCall("lookup", {"n": n})
        try:
            await gate(call, ctx, transport)
        except Halt as halt:
            return halt.reason.value
        return None

    outcomes = await asyncio.gather(*(one(n) for n in range(100)))
    dimension = reason.removeprefix("budget.").replace("cost", "usd")
    cap = next(c for c in ctx.caps if c.dimension == dimension)
    used = (await counters.get(cap.key)).used
    assert used <= cap.limit
    assert reason in outcomes
    if dimension == "tokens":
        worst = estimate_input_tokens(LLMCall("r", messages())) + 400
        assert used >= cap.limit - worst
    else:
        assert used == cap.limit == outcomes.count(None)


async def test_max_tokens_is_clamped_to_what_the_budget_can_pay() -> None:
    counters, ctx = MemoryCounters(), context()
    gate, transport = BudgetGate(counters), Echo(output_tokens=1)
    tokens_in = estimate_input_tokens(LLMCall("r", messages()))
    # Leave room for 100 output tokens in the session's 0.05 $.
    room = 50_000 - (tokens_in * IN_PRICE + 100 * OUT_PRICE)
    await counters.add(f"budget:session:{ctx.session}:usd", room)
    await gate(LLMCall("r", messages(), max_tokens=900), ctx, transport)
    assert transport.calls[-1].max_tokens == 100  # type: ignore[union-attr]


async def test_a_call_names_none_gets_the_models_max_output() -> None:
    counters, ctx = MemoryCounters(), context()
    transport = Echo(output_tokens=1)
    await BudgetGate(counters)(LLMCall("r", messages()), ctx, transport)
    assert transport.calls[-1].max_tokens == MAX_OUT  # type: ignore[union-attr]


async def test_halt_names_the_rule_and_the_numbers() -> None:
    counters, ctx = MemoryCounters(), context()
    await counters.add(f"budget:session:{ctx.session}:usd", 49_990)
    with pytest.raises(Halt) as caught:
        await BudgetGate(counters)(LLMCall("r", messages()), ctx, Echo())
    halt = caught.value
    assert halt.reason is HaltReason.BUDGET_COST
    detail = dict(halt.detail)
    assert detail["rule"] == "agent_types.worker.session.usd"
    assert (detail["level"], detail["dimension"], detail["limit"]) == ("session", "usd", 0.05)
    assert detail["used"] == 0.04999
    assert detail["needed"] > 0.00001
    assert (
        "session (this run has no session: the session caps apply to it alone)"
        " usd cap of 0.05 would be crossed" in halt.message
    )


async def test_route_worst_case_uses_the_dearest_model_of_the_chain() -> None:
    counters, ctx = MemoryCounters(), context(agent="b")
    seen: list[int] = []

    async def peek(call: Call, ctx: RunContext) -> Result:
        seen.append((await counters.get(f"budget:session:{ctx.session}:usd")).held)
        return LLMResult("ok", Usage(1, 1), model="m")

    await BudgetGate(counters)(LLMCall("pricey", messages(), max_tokens=100), ctx, peek)
    tokens_in = estimate_input_tokens(LLMCall("pricey", messages()))
    assert seen == [tokens_in * 3 + 100 * 12]  # big's prices, not m's


async def test_per_day_window_resets_with_the_clock() -> None:
    clock = Clock()
    counters = MemoryCounters(wall_clock=clock)
    gate, ctx = BudgetGate(counters, clock=clock), context()
    fleet = next(c for c in ctx.caps if c.level == "fleet")
    day = int(clock() // 86400)
    await counters.add(f"{fleet.key}:{day}", fleet.limit)  # today's fleet budget is gone
    with pytest.raises(Halt) as caught:
        await gate(LLMCall("r", messages()), ctx, Echo(output_tokens=1))
    assert caught.value.detail["level"] == "fleet"
    clock.now += 86400  # tomorrow
    result = await gate(LLMCall("r", messages()), ctx, Echo(output_tokens=1))
    assert isinstance(result, LLMResult) and result.cost_usd > 0
    assert (await counters.get(f"{fleet.key}:{day + 1}")).used > 0


async def test_every_failure_releases_the_hold() -> None:
    counters, ctx = MemoryCounters(), context()

    async def broken(call: Call, ctx: RunContext) -> Result:
        raise ConnectionError("upstream went away")

    for _ in range(1000):
        with pytest.raises(ConnectionError):
            await BudgetGate(counters)(LLMCall("r", messages()), ctx, broken)
    assert all(c.held == 0 and c.used == 0 for c in counters._counters.values())


async def test_cancelled_call_releases_the_hold() -> None:
    counters, ctx = MemoryCounters(), context()

    async def slow(call: Call, ctx: RunContext) -> Result:
        await asyncio.sleep(10)
        raise AssertionError("never reached")

    task = asyncio.create_task(BudgetGate(counters)(LLMCall("r", messages()), ctx, slow))
    await asyncio.sleep(0.01)
    assert any(c.held for c in counters._counters.values())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(c.held == 0 for c in counters._counters.values())


async def test_settle_sets_the_cost_and_commits_the_actual_usage() -> None:
    counters, ctx = MemoryCounters(), context()
    result = await BudgetGate(counters)(LLMCall("r", messages()), ctx, Echo(output_tokens=10))
    assert isinstance(result, LLMResult)
    assert result.cost_usd == pytest.approx((5 * 1 + 10 * 4) / MICRO_USD)
    session = await counters.get(f"budget:session:{ctx.session}:usd")
    assert session == (45, 0)
    assert await counters.get(f"budget:session:{ctx.session}:tokens") == (15, 0)
    assert await counters.get(f"budget:session:{ctx.session}:steps") == (1, 0)


def test_topup_raises_task_and_session_caps_only() -> None:
    snapshot = policy()
    caps = {
        (c.level, c.dimension): c.limit
        for c in build_caps(snapshot, "worker", "run", "s", {"usd": 0.5, "steps": 5})
    }
    assert caps[("task", "usd")] == 1_500_000
    assert caps[("session", "usd")] == 550_000
    assert caps[("session", "steps")] == 35
    assert caps[("fleet", "usd")] == 200_000


async def test_a_run_without_caps_passes_straight_through() -> None:
    snapshot = policy(
        "version: 1\n"
        "providers: {p: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}}\n"
        "models: {m: {provider: p, model: x, context_window: 9000}}\n"
        "routes: {r: [m]}\n"
        "agent_types: {t: {}}\n"
        "agents: {a: {type: t, route: r}}\n"
    )
    counters = MemoryCounters()
    await BudgetGate(counters)(LLMCall("r", messages()), context(snapshot), Echo())
    assert not counters._counters
