"""Deadline: the run's wall-clock limit, enforced before a call and during it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from corral.calls import Call, Halt, HaltReason, Result
from corral.gates.base import Next, RunContext


class DeadlineGate:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    async def __call__(self, call: Call, ctx: RunContext, next: Next) -> Result:
        if ctx.deadline is None:
            return await next(call, ctx)
        now = self._clock()
        # A call of the run waiting for a human meanwhile stops the clock (see RunContext).
        remaining = ctx.deadline + ctx.waiting_now(now) - now
        if remaining <= 0:
            raise self._halt(ctx, "before the call")
        limit = asyncio.timeout(remaining)
        ctx.track_deadline(limit)
        try:
            async with limit:
                return await next(call, ctx)
        except TimeoutError:
            if limit.expired():  # ours, not a timeout raised from below
                raise self._halt(ctx, "during the call") from None
            raise
        finally:
            ctx.deadline_timers.remove(limit)

    def _halt(self, ctx: RunContext, when: str) -> Halt:
        run = ctx.record  # time spent waiting for humans moved the deadline, not the limit
        limit_s = 0.0 if ctx.deadline is None else ctx.deadline - run.created_at - run.waiting_s
        return Halt(
            HaltReason.TIMEOUT,
            f"the run's wall-clock limit of {limit_s:g}s passed {when}",
            {"rule": "wall_clock", "limit_s": limit_s, "deadline": ctx.deadline},
        )
