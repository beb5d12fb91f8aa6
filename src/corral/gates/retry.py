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

from opentelemetry.trace import SpanKind, Status, StatusCode

from corral.calls import Call, LLMCall, Result
from corral.gates.base import Next, RunContext
from corral.policy import Retry
from corral.providers.base import FailureKind, ProviderError
from corral.state import Counters
from corral.telemetry.kpis import Kpis
from corral.telemetry.tracing import Tracing, current_span

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
        tracing: Tracing | None = None,
        kpis: Kpis | None = None,
    ) -> None:
        self._counters = counters
        self._clock = clock
        self._sleep = sleep
        self._draw = draw
        self._tracing = tracing
        self._kpis = kpis

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
            call.attempts += 1
            if attempt > 1 and self._kpis is not None:  # a retry is counted once it is made
                self._kpis.retry(ctx.record.agent, ctx.record.agent_type)
            begun = time.time_ns()
            try:
                result = await next(call, ctx)
            except ProviderError as failure:
                self._attempted(call, ctx, begun, attempt, failure.kind.value)
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
                call.retry_wait += pause
                attempt += 1
            else:
                if call.attempts > 1:
                    self._attempted(call, ctx, begun, attempt, None)
                return result

    def _attempted(
        self, call: LLMCall, ctx: RunContext, begun: int, attempt: int, error: str | None
    ) -> None:
        """A span for an upstream attempt under the call's, once the call has more than
        one or this one failed (a call answered at once needs none: its span says it)."""
        parent = current_span(ctx.run_id)
        if self._tracing is None or parent is None or not parent.is_recording():
            return
        tracing = self._tracing
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": call.target or call.model,
            "corral.retry.attempt": attempt,
        }
        if call.fallback_from is not None:
            attributes["corral.fallback.from"] = call.fallback_from
            attributes["corral.fallback.to"] = call.target or call.model
        span = tracing.tracer.start_span(
            f"chat {call.target or call.model}",
            tracing.in_span(parent),
            SpanKind.CLIENT,
            attributes=attributes,
            start_time=begun,
        )
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()

    def _provider(self, call: LLMCall, ctx: RunContext) -> str:
        name = call.target or ctx.policy.routes.get(call.model, (call.model,))[0]
        return ctx.policy.models[name].provider
