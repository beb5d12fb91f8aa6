"""The escalation packet: what a human needs to pick up a halted run."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from corral.calls import Halt
from corral.gates.base import RunContext


def build_packet(ctx: RunContext, halt: Halt, halted_at: float) -> dict[str, Any]:
    run = ctx.record
    return {
        "run_id": run.id,
        "agent": run.agent,
        "agent_type": run.agent_type,
        "task": run.task,
        "session": ctx.session,
        "reason": halt.reason.value,
        "message": halt.message,
        "rule": dict(halt.detail),
        "steps": [asdict(step) for step in ctx.recent],
        "usage": {
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "cost_usd": run.cost_usd,
            "steps": run.steps,
            "tool_calls": run.tool_calls,
        },
        "trace_id": run.trace_id,
        "last_checkpoint_id": run.last_checkpoint_id,
        "started_at": run.created_at,
        "halted_at": halted_at,
    }
