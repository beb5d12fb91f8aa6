"""Idempotency: a tool call whose key already has a recorded result returns that result.

The result is recorded before the call returns to the agent, so a crash after this
point never runs the tool body again on resume.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from corral.calls import Call, Result, ToolResult
from corral.gates.base import Next, RunContext
from corral.state import IdempotencyRecord, Store


class IdempotencyGate:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def __call__(self, call: Call, ctx: RunContext, next: Next) -> Result:
        if call.kind != "tool" or call.idempotency_key is None:
            return await next(call, ctx)
        done = await self._store.get_idempotent(call.idempotency_key)
        if done is not None:
            return ToolResult(done.result, replayed=True)
        result = await next(call, ctx)
        assert isinstance(result, ToolResult)  # the tool transport answers tool calls
        # Shielded: the body has run, so a kill landing now must not drop its record.
        kept = await asyncio.shield(
            self._store.put_idempotent(
                IdempotencyRecord(call.idempotency_key, ctx.run_id, result.value, self._clock())
            )
        )
        # First writer wins: a concurrent duplicate gets the same answer as the first.
        return ToolResult(kept.result)
