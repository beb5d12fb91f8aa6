"""Kill switch: a run an operator killed halts at its next gate."""

from __future__ import annotations

from corral.calls import Call, Halt, HaltReason, Result
from corral.gates.base import Next, RunContext


class KillSwitchGate:
    """Reads a flag the supervisor's watcher sets; the store is not touched per call."""

    async def __call__(self, call: Call, ctx: RunContext, next: Next) -> Result:
        if ctx.kill_requested_at is not None:
            raise Halt(
                HaltReason.KILLED,
                "an operator killed the run",
                {"rule": "kill switch", "requested_at": ctx.kill_requested_at},
            )
        return await next(call, ctx)
