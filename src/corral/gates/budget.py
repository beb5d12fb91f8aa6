"""Budget: hold a call's worst case at every level at once before it runs; settle after.

Counters hold integer units (micro-USD for money) so sums are exact. An LLM call's
worst case is its input (bounded from above, never under) plus `max_tokens` of
output; `max_tokens` is clamped to what the tightest remaining cap can still pay, so
a run spends up to its cap instead of stopping a whole call short of it.

The hold is made durable before the call goes on (a write-ahead InflightRecord), so a
process that dies mid-call leaves a record of the worst case for recovery to charge;
the step the record gate writes for the call deletes it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping

from corral.calls import (
    Call,
    Halt,
    HaltReason,
    LLMCall,
    LLMResult,
    Result,
    Usage,
    estimate_input_tokens,
)
from corral.gates.base import Cap, Next, RunContext
from corral.policy import Policy
from corral.providers.base import ProviderError
from corral.providers.pricing import ModelPrice
from corral.state import Counters, Hold, InflightRecord, Reservation, Store

MICRO_USD = 1_000_000
WINDOW_SECONDS = {"hour": 3600.0, "day": 86400.0, "week": 604800.0}
DIMENSIONS = {
    "usd": HaltReason.BUDGET_COST,
    "tokens": HaltReason.BUDGET_TOKENS,
    "tool_calls": HaltReason.BUDGET_TOOL_CALLS,
    "steps": HaltReason.BUDGET_STEPS,
}
# A call that cannot afford even this much output is refused rather than sent.
MIN_OUTPUT_TOKENS = 1
# Waiting for holds of calls in flight to settle: short first, then backing off.
FIRST_WAIT, LONGEST_WAIT = 0.001, 0.05


def build_caps(
    policy: Policy, agent_type: str, run_id: str, session: str, topup: Mapping[str, float]
) -> tuple[Cap, ...]:
    """The caps a run answers to, from the policy snapshot; a top-up raises task and session."""
    kind = policy.agent_types[agent_type]
    levels = (
        ("task", kind.task, f"task:{run_id}", f"agent_types.{agent_type}.task"),
        ("session", kind.session, f"session:{session}", f"agent_types.{agent_type}.session"),
        ("fleet", kind.fleet, f"fleet:{agent_type}", f"agent_types.{agent_type}.fleet"),
        ("global", policy.global_, "global", "global"),
    )
    caps: list[Cap] = []
    for level, limits, scope, rule in levels:
        if limits is None:
            continue
        window = WINDOW_SECONDS.get(getattr(limits, "per", None) or "")
        for dimension, reason in DIMENSIONS.items():
            value = getattr(limits, dimension)
            if value is None:
                continue
            if level in ("task", "session"):
                value += topup.get(dimension, 0)
            units = round(value * MICRO_USD) if dimension == "usd" else int(value)
            caps.append(
                Cap(level, dimension, f"budget:{scope}:{dimension}", units, window, reason, rule)
            )
    return tuple(caps)


def cap_key(cap: Cap, now: float) -> str:
    """The counter key of `cap` at time `now`: windowed caps move to a new key each window."""
    return cap.key if cap.window is None else f"{cap.key}:{int(now // cap.window)}"


async def remaining_usd(counters: Counters, caps: tuple[Cap, ...], now: float) -> float | None:
    """USD the tightest of `caps` still allows (spent and held count); None if none caps USD."""
    usd = [cap for cap in caps if cap.dimension == "usd"]
    if not usd:
        return None
    values = await counters.get_many([cap_key(cap, now) for cap in usd])
    left = min(cap.limit - used - held for cap, (used, held) in zip(usd, values, strict=True))
    return max(left, 0) / MICRO_USD


class _Worst:
    """A call's worst case: fixed units per dimension plus units per output token."""

    __slots__ = ("fixed", "per_output", "want")

    def __init__(self, fixed: dict[str, float], per_output: dict[str, float], want: int) -> None:
        self.fixed = fixed
        self.per_output = per_output
        self.want = want

    def amount(self, dimension: str, output_tokens: int) -> int:
        return math.ceil(
            self.fixed.get(dimension, 0) + self.per_output.get(dimension, 0) * output_tokens
        )


class BudgetGate:
    """`store` given, every call's worst case is written ahead (see the module docstring)."""

    def __init__(
        self,
        counters: Counters,
        clock: Callable[[], float] = time.time,
        store: Store | None = None,
    ) -> None:
        self._counters = counters
        self._clock = clock
        self._store = store
        self._bounds_for: Policy | None = None
        self._route_bounds: dict[str, tuple[float, float, int]] = {}
        self._prices: Mapping[str, ModelPrice | None] = {}

    async def __call__(self, call: Call, ctx: RunContext, next: Next) -> Result:
        worst = self._worst(call, ctx)
        reservation, caps = await self._hold(call, ctx, worst) if ctx.caps else (None, [])
        try:
            if self._store is not None and ctx.record.owner is not None:
                await self._begin(self._store, call, ctx, worst)
            result = await next(call, ctx)
        except ProviderError as failure:
            if failure.usage is None:
                await self._release(reservation)
            else:  # a stream cut mid-way: what arrived was spent (but made no step)
                target = call.target if isinstance(call, LLMCall) else None
                failure.cost_usd = await self._commit(
                    reservation, caps, ctx, failure.usage, target, steps=0
                )
            raise
        except BaseException:
            await self._release(reservation)
            raise
        if isinstance(result, LLMResult):
            result.cost_usd = await self._commit(reservation, caps, ctx, result.usage, result.model)
            if call.kind == "llm" and call.budget_left_usd is not None:
                call.budget_left_usd = max(call.budget_left_usd - result.cost_usd, 0.0)
        elif reservation is not None:
            await self._counters.commit(reservation, [1 for _ in caps])  # steps, tool_calls
        return result

    async def _release(self, reservation: Reservation | None) -> None:
        if reservation is not None:
            await self._counters.release(reservation)

    async def _begin(self, store: Store, call: Call, ctx: RunContext, worst: _Worst) -> None:
        """The durable record of the hold, before the call goes on."""
        owner = ctx.record.owner
        assert owner is not None
        call.inflight = f"{owner}/{call.id}"
        if call.kind == "llm":
            output = call.max_tokens or worst.want
            name, tokens_in = call.model, int(worst.fixed["tokens"])
            usd = worst.amount("usd", output) / MICRO_USD
        else:
            name, tokens_in, output, usd = call.name, 0, 0, 0.0
        record = InflightRecord(
            call.inflight, ctx.run_id, owner, ctx.call_seq, call.kind, name,
            self._clock(), tokens_in, output, usd,
        )  # fmt: skip
        await store.begin_call(record)

    def _worst(self, call: Call, ctx: RunContext) -> _Worst:
        if call.kind == "tool":
            return _Worst({"steps": 1, "tool_calls": 1}, {}, 0)
        in_price, out_price, most = self._bounds(ctx.policy, call.model)
        tokens_in = estimate_input_tokens(call)
        want = call.max_tokens or most
        # USD per million tokens is micro-USD per token: the counters' own unit.
        return _Worst(
            {"usd": tokens_in * in_price, "tokens": tokens_in, "steps": 1},
            {"usd": out_price, "tokens": 1},
            want,
        )

    def _bounds(self, policy: Policy, name: str) -> tuple[float, float, int]:
        """Per route: the dearest input and output prices on its chain (the worst case
        before the route gate picks a model) and the output every model can give.
        Worked out once per policy snapshot."""
        if self._bounds_for is not policy:
            self._bounds_for, self._route_bounds, self._prices = policy, {}, policy.prices
        found = self._route_bounds.get(name)
        if found is None:
            names = policy.routes.get(name, (name,))
            prices = [p for p in (policy.prices[n] for n in names) if p is not None]
            found = self._route_bounds[name] = (
                max((p.input_per_mtok for p in prices), default=0.0),
                max((p.output_per_mtok for p in prices), default=0.0),
                min(policy.models[n].max_output_tokens for n in names),
            )
        return found

    async def _hold(
        self, call: Call, ctx: RunContext, worst: _Worst
    ) -> tuple[Reservation, list[Cap]]:
        caps = [cap for cap in ctx.caps if cap.dimension in worst.fixed]
        wait = FIRST_WAIT
        while True:
            now = self._clock()
            keys = [cap_key(cap, now) for cap in caps]
            output = worst.want
            left = None
            if call.kind == "llm":
                output, short, left = await self._affordable(worst, caps, keys)
                if short is not None:
                    raise self._halt(short, worst, ctx)
            holds = [
                Hold(key, worst.amount(cap.dimension, output), cap.limit, cap.window)
                for cap, key in zip(caps, keys, strict=True)
            ]
            got = await self._counters.reserve(holds)
            if isinstance(got, Reservation):
                if call.kind == "llm":
                    call.max_tokens = output
                    call.budget_left_usd = left
                return got, caps
            cap = caps[keys.index(got.key)]
            if got.used + worst.amount(cap.dimension, MIN_OUTPUT_TOKENS) > got.limit:
                raise self._halt((cap, got.used, got.held), worst, ctx)
            # It would fit once calls in flight settle (they usually spend less than they hold).
            await asyncio.sleep(wait)
            wait = min(wait * 2, LONGEST_WAIT)

    async def _affordable(
        self, worst: _Worst, caps: list[Cap], keys: list[str]
    ) -> tuple[int, tuple[Cap, int, int] | None, float | None]:
        """Output tokens every cap can pay now, the cap that can never pay the minimum,
        and the USD the tightest USD cap has left before this call (None: none caps USD)."""
        output = worst.want
        left: int | None = None
        paying = [
            (cap, key)
            for cap, key in zip(caps, keys, strict=True)
            if cap.dimension in worst.per_output
        ]
        values = await self._counters.get_many([key for _, key in paying])
        for (cap, _), (used, held) in zip(paying, values, strict=True):
            if cap.dimension == "usd":
                room = max(cap.limit - used - held, 0)
                left = room if left is None else min(left, room)
            per = worst.per_output[cap.dimension]
            if not per:
                continue
            fixed = worst.fixed[cap.dimension]
            if used + math.ceil(fixed + per * MIN_OUTPUT_TOKENS) > cap.limit:
                return 0, (cap, used, held), None
            output = min(output, math.floor((cap.limit - used - held - fixed) / per))
        # Below the minimum only because of holds in flight: reserve() decides, or we wait.
        usd = None if left is None else left / MICRO_USD
        return max(output, MIN_OUTPUT_TOKENS), None, usd

    async def _commit(
        self,
        reservation: Reservation | None,
        caps: list[Cap],
        ctx: RunContext,
        usage: Usage,
        model: str | None,
        *,
        steps: int = 1,
    ) -> float:
        """Commit what an LLM call used; returns its cost in USD."""
        prices = self._prices if self._bounds_for is ctx.policy else ctx.policy.prices
        price = prices.get(model) if model else None
        cost = price.cost(usage) if price else 0.0
        if reservation is not None:
            spent = {"usd": math.ceil(cost * MICRO_USD), "tokens": usage.total_tokens}
            spent["steps"] = steps
            await self._counters.commit(reservation, [spent[cap.dimension] for cap in caps])
        return cost

    def _halt(self, short: tuple[Cap, int, int], worst: _Worst, ctx: RunContext) -> Halt:
        cap, used, held = short
        needed = worst.amount(cap.dimension, MIN_OUTPUT_TOKENS)
        scale = MICRO_USD if cap.dimension == "usd" else 1

        def shown(units: int) -> float | int:
            return units / scale if scale != 1 else units

        # A run without a session is a session of its own: say so, or "session" puzzles.
        level = cap.level
        if level == "session" and ctx.record.session is None:
            level = "session (this run has no session: the session caps apply to it alone)"
        return Halt(
            cap.reason,
            f"{level} {cap.dimension} cap of "
            f"{shown(cap.limit)} would be crossed: "
            f"{shown(used)} spent, the next call needs at least {shown(needed)}",
            {
                "rule": f"{cap.rule}.{cap.dimension}",
                "level": cap.level,
                "dimension": cap.dimension,
                "limit": shown(cap.limit),
                "used": shown(used),
                "held": shown(held),
                "needed": shown(needed),
            },
        )
