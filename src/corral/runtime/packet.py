"""The escalation packet: what a human needs to pick up a halted run."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from corral.calls import Halt
from corral.gates.base import RunContext, StepView
from corral.state import RunRecord


def build_packet(ctx: RunContext, halt: Halt, halted_at: float) -> dict[str, Any]:
    return packet_for(ctx.record, ctx.recent, halt, halted_at)


def packet_for(
    run: RunRecord, recent: Iterable[StepView], halt: Halt, halted_at: float
) -> dict[str, Any]:
    """The packet of `run` halted by `halt`, with its `recent` steps; also for runs halted
    by recovery, outside any process that served them."""
    return {
        "run_id": run.id,
        "agent": run.agent,
        "agent_type": run.agent_type,
        "task": run.task,
        "session": run.session,
        "reason": halt.reason.value,
        "message": halt.message,
        "rule": dict(halt.detail),
        "steps": [asdict(step) for step in recent],
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
