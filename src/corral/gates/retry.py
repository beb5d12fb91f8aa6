"""Retry: exponential backoff with jitter for transient upstream failures, within budgets.

Only rate_limited, unavailable and timeout are retried; a bad request, a refused
key or a content-policy refusal fails the same way every time, and a halt is a
decision. A streamed call is never retried once its first byte reached the caller.
Retry-After is honoured as a floor, with jitter added on top so a crowd that got
the same 429 does not come back in the same millisecond. A retry budget per
provider (a share of its calls over a window) keeps a fleet from storming a
provider that is already struggling.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from corral.calls import Call, LLMCall, Result
from corral.gates.base import Next, RunContext
from corral.policy import Retry
from corral.providers.base import FailureKind, ProviderError
from corral.state import Counters

RETRYABLE = frozenset({FailureKind.RATE_LIMITED, FailureKind.UNAVAILABLE, FailureKind.TIMEOUT})


def backoff(settings: Retry, attempt: int, draw: Callable[[], float]) -> float:
    """The pause before retry number `attempt` (1-based), jittered as the policy says."""
    ceiling = min(settings.max_delay, settings.base_delay * 2.0 ** (attempt - 1))
    if settings.jitter == "full":
        return ceiling * draw()
    if settings.jitter == "equal":
        return ceiling / 2 + ceiling / 2 * draw()
    return ceiling


class RetryGate:
    def __init__(
        self,
        counters: Counters,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._counters = counters
        self._clock = clock
        self._sleep = sleep
        self._draw = draw

    async def __call__(self, call: Call, ctx: RunContext, next: Next) -> Result:
        if call.kind == "tool":  # a tool's side effects are not ours to repeat
            return await next(call, ctx)
        settings = ctx.policy.retry
        provider = self._provider(call, ctx)
        window = int(self._clock() // settings.budget_window)
        ttl = settings.budget_window * 2
        calls = await self._counters.add(f"retry:{provider}:calls:{window}", 1, ttl)
        waited = 0.0
        attempt = 1
        while True:
            try:
                return await next(call, ctx)
            except ProviderError as failure:
                if failure.kind not in RETRYABLE or call.delivered:
                    raise
                if attempt >= settings.max_attempts:
                    raise
                pause = backoff(settings, attempt, self._draw)
                if failure.retry_after is not None:
                    pause += failure.retry_after  # never sooner than asked, never in step
                if waited + pause > settings.max_total_wait:
                    raise
                retries = await self._counters.add(f"retry:{provider}:retries:{window}", 1, ttl)
                if retries > max(settings.budget_min, settings.budget * calls):
                    raise
                await self._sleep(pause)
                waited += pause
                attempt += 1

    def _provider(self, call: LLMCall, ctx: RunContext) -> str:
        name = call.target or ctx.policy.routes.get(call.model, (call.model,))[0]
        return ctx.policy.models[name].provider
