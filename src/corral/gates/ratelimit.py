"""Rate-limit share: token buckets per agent and per provider, waited for in priority order.

An agent's `rate_limit` gives it two buckets, `rate:{agent}:rpm` (every LLM call takes
1) and `rate:{agent}:tpm` (a call takes its worst case: input tokens bounded from above
plus `max_tokens`, which the budget gate has clamped). A provider's `requests_per_minute`
gives one bucket, `rate:provider:{provider}:rpm`, that every LLM call to it takes from,
whatever the agent. Buckets live in Counters, so with Redis counters every node draws on
the same bucket and a limit means the same with one replica or ten. A bucket holds a
minute's allowance (the burst) and refills at a sixtieth of it per second.

A call that finds a bucket empty waits, up to its agent's `rate_limit.max_wait` across
all its buckets (DEFAULT_MAX_WAIT for an agent without a `rate_limit`), and past that
fails with RateLimited: no halt, the run goes on and the gateway answers 429 with
Retry-After. Limits and bounds are read from each call's policy snapshot, so a reload
applies from the next call on. The callers of this process waiting on one bucket queue
in its waiting room, higher priority first and in arrival order within a priority; only
the head of the queue polls the bucket, so the queue's order is the order of service and
a crowd of waiters costs one poll per refill, not one per waiter. Between nodes there is
no queue: each node's head competes for the shared bucket.

The tokens bucket is paid the worst case up front; once the call is over, what it did
not use goes back (`Counters.give`), so the limit counts tokens spent, not the bound. A
call that failed without usage gives everything back; one that gave up waiting, or was
cancelled or halted, keeps its tokens taken: that errs on the safe side of the limit.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import itertools
from dataclasses import dataclass

from corral.calls import Call, LLMCall, LLMResult, Result, estimate_input_tokens
from corral.gates.base import Next, RunContext
from corral.policy import Model, RateLimit
from corral.providers.base import ProviderError
from corral.state import Counters

# Lower is served first.
PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}
NORMAL = PRIORITY_RANK["normal"]
# An agent without a rate_limit waits on a provider's bucket as long as one whose
# rate_limit leaves max_wait out.
DEFAULT_MAX_WAIT = RateLimit().max_wait
# The head never polls sooner than this: float dust in a bucket's arithmetic can ask for
# waits below what the clock tells apart, and each poll may be a round trip to Redis.
MIN_PAUSE = 0.001


class RateLimited(Exception):
    """A call waited for a rate limit as long as it may, or could never be served.

    Not a Halt: a full bucket is no reason to stop a run. `retry_after` is how many
    seconds from now the call would likely go through; None when the call alone needs
    more than its bucket holds, so no wait would ever serve it. `rule` names the
    policy key that limited it.
    """

    def __init__(self, agent: str, retry_after: float | None, message: str, rule: str) -> None:
        super().__init__(f"agent '{agent}' is rate limited: {message}")
        self.agent = agent
        self.retry_after = retry_after
        self.message = message
        self.rule = rule


@dataclass(frozen=True, slots=True)
class _ProviderLimit:
    key: str
    rule: str


# Bounded, so reloads that keep renaming providers cannot grow it without end.
@functools.lru_cache(maxsize=256)
def _provider_limit(provider: str) -> _ProviderLimit:
    """A provider's bucket key and policy key, built once per provider and not per call."""
    return _ProviderLimit(
        f"rate:provider:{provider}:rpm", f"providers.{provider}.requests_per_minute"
    )


class _Waiter:
    """A call in a waiting room, ordered by priority rank, then by arrival."""

    __slots__ = ("order", "turn")

    def __init__(self, rank: int, arrival: int) -> None:
        self.order = (rank, arrival)
        # Set when the waiter should look again: it may have become the head.
        self.turn = asyncio.Event()


def _model(call: LLMCall, ctx: RunContext) -> Model:
    """The model the call goes to: before the route gate picks one, the route's first."""
    name = call.target or ctx.policy.routes.get(call.model, (call.model,))[0]
    return ctx.policy.models[name]


def _order(waiter: _Waiter) -> tuple[int, int]:
    return waiter.order


class _Room:
    """The callers of this process waiting on one bucket; queue[0] is the head."""

    __slots__ = ("queue", "ready_at")

    def __init__(self) -> None:
        self.queue: list[_Waiter] = []
        self.ready_at = 0.0  # loop time at which the head expects its tokens


class RateLimitGate:
    """Limits and waits as the call's policy snapshot says; holds only the waiting rooms."""

    def __init__(self, counters: Counters) -> None:
        self._counters = counters
        self._rooms: dict[str, _Room] = {}
        self._arrivals = itertools.count()

    async def __call__(self, call: Call, ctx: RunContext, next: Next) -> Result:
        if call.kind == "tool":
            return await next(call, ctx)
        limit = ctx.agent_policy.rate_limit
        model = _model(call, ctx)
        quota = ctx.policy.providers[model.provider].requests_per_minute
        if limit is None and quota is None:
            return await next(call, ctx)
        agent = ctx.record.agent
        if limit is None:
            rank, max_wait = NORMAL, DEFAULT_MAX_WAIT
        else:
            rank, max_wait = PRIORITY_RANK[limit.priority], limit.max_wait
        deadline: float | None = None  # set at the first wait: the bound covers every bucket
        if limit is not None:
            rpm, tpm = limit.requests_per_minute, limit.tokens_per_minute
            tokens = 0
            if tpm is not None:
                # Refused before anything is taken, so a hopeless call costs no request.
                tokens = self._worst_tokens(call, model, agent, tpm)
            if rpm is not None:
                rule = f"agents.{agent}.rate_limit.requests_per_minute"
                deadline = await self._take(
                    f"rate:{agent}:rpm", 1, rpm, rank, deadline, max_wait, agent, rule
                )
            if tpm is not None:
                rule = f"agents.{agent}.rate_limit.tokens_per_minute"
                deadline = await self._take(
                    f"rate:{agent}:tpm", tokens, tpm, rank, deadline, max_wait, agent, rule
                )
        if quota is not None:
            provider = _provider_limit(model.provider)
            # Last, so a call holds no place in the shared queue while its own buckets refill.
            await self._take(provider.key, 1, quota, rank, deadline, max_wait, agent, provider.rule)
        if limit is None or limit.tokens_per_minute is None:
            return await next(call, ctx)
        # The bucket paid the worst case; what the call did not use goes back.
        used = tokens
        try:
            result = await next(call, ctx)
            if isinstance(result, LLMResult):
                used = result.usage.input_tokens + result.usage.output_tokens
            return result
        except ProviderError as failure:
            usage = failure.usage
            used = 0 if usage is None else usage.input_tokens + usage.output_tokens
            raise
        finally:
            if used < tokens:
                await self._counters.give(
                    f"rate:{agent}:tpm", tokens - used, limit.tokens_per_minute
                )

    def _worst_tokens(self, call: LLMCall, model: Model, agent: str, tpm: int) -> int:
        tokens_in = estimate_input_tokens(call)
        out = call.max_tokens
        if out is None:  # the transport then sends the model's own maximum
            out = model.max_output_tokens
        need = tokens_in + out
        if need > tpm:
            raise RateLimited(
                agent,
                None,
                f"a call of up to {need} tokens ({tokens_in} in, {out} out) is more than "
                f"its tokens_per_minute of {tpm} can ever serve",
                f"agents.{agent}.rate_limit.tokens_per_minute",
            )
        return need

    async def _take(
        self,
        key: str,
        amount: int,
        per_minute: int,
        rank: int,
        deadline: float | None,
        max_wait: float,
        agent: str,
        rule: str,
    ) -> float | None:
        """Take `amount` from the bucket, waiting if need be; returns the call's deadline."""
        rate = per_minute / 60
        wait: float | None = None
        # With callers already waiting, a newcomer joins the queue instead of polling, or
        # it could take the tokens a waiter of higher priority or earlier arrival is due.
        if key not in self._rooms:
            wait = await self._counters.take(key, amount, rate, per_minute)
            if wait == 0.0:
                return deadline
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + max_wait
        await self._queue(
            key, amount, rate, per_minute, rank, deadline, max_wait, wait, agent, rule
        )
        return deadline

    async def _queue(
        self,
        key: str,
        amount: int,
        rate: float,
        capacity: int,
        rank: int,
        deadline: float,
        max_wait: float,
        wait: float | None,
        agent: str,
        rule: str,
    ) -> None:
        """Wait in the bucket's room until served as its head, or until `deadline`.

        `max_wait` is the bound `deadline` was set by, for the caller's error; `wait` is the
        head's seconds to go if this caller just polled the bucket.
        """
        loop = asyncio.get_running_loop()
        room = self._rooms.get(key)
        if room is None:
            room = self._rooms[key] = _Room()
        me = _Waiter(rank, next(self._arrivals))
        bisect.insort(room.queue, me, key=_order)
        try:
            while True:
                me.turn.clear()
                if room.queue[0] is me:
                    if wait is None:
                        wait = await self._counters.take(key, amount, rate, capacity)
                        if wait == 0.0:
                            return
                    now = loop.time()
                    room.ready_at = now + wait
                    if room.ready_at > deadline:  # waiting cannot help: tell the caller now
                        raise RateLimited(
                            agent,
                            wait,
                            f"{rule} ({capacity}) would serve this call in {wait:.3f}s, "
                            f"past the {max_wait}s it may wait",
                            rule,
                        )
                    pause = max(wait, MIN_PAUSE)
                else:
                    now = loop.time()
                    if now >= deadline:
                        # The calls ahead are served first, then this one's own refill.
                        retry_after = max(room.ready_at - now, 0.0) + amount / rate
                        raise RateLimited(
                            agent,
                            retry_after,
                            f"still queued for {rule} ({capacity}) after {max_wait}s, "
                            "behind calls of higher priority or earlier arrival",
                            rule,
                        )
                    pause = deadline - now
                wait = None
                # Woken early when the head leaves and this waiter may be next.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await me.turn.wait()
        finally:
            self._leave(key, room, me)

    def _leave(self, key: str, room: _Room, me: _Waiter) -> None:
        was_head = room.queue[0] is me
        room.queue.remove(me)
        if not room.queue:
            del self._rooms[key]
        elif was_head:
            room.queue[0].turn.set()
