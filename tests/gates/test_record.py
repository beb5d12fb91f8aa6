"""The record gate: every call is a step row and an audit entry, whatever its outcome."""

from __future__ import annotations

import pytest

from corral.calls import Call, Halt, HaltReason, LLMCall, Result, ToolCall, ToolResult
from corral.gates.base import RunContext
from corral.gates.record import RecordGate
from corral.state import SQLiteStore
from corral.telemetry.audit import AuditLog

from .conftest import Echo, context, messages


async def test_each_outcome_is_recorded_with_its_status(store: SQLiteStore) -> None:
    ctx = context()
    await store.create_run(ctx.record)
    audit = AuditLog(store)
    gate = RecordGate(store, audit)

    async def refuse(call: Call, ctx: RunContext) -> Result:
        raise Halt(HaltReason.POLICY_DENIED, "no")

    async def crash(call: Call, ctx: RunContext) -> Result:
        raise ValueError("bad input")

    async def replay(call: Call, ctx: RunContext) -> Result:
        return ToolResult({"cached": True}, replayed=True)

    await gate(LLMCall("r", messages("hi")), ctx, Echo(output_tokens=7))
    await gate(ToolCall("lookup", {"id": 3}, "k-1"), ctx, Echo())
    with pytest.raises(Halt):
        await gate(ToolCall("send", {}), ctx, refuse)
    with pytest.raises(ValueError, match="bad input"):
        await gate(ToolCall("lookup", {"id": "x"}), ctx, crash)
    await gate(ToolCall("lookup", {"id": 3}, "k-1"), ctx, replay)

    steps = await store.list_steps(ctx.run_id)
    assert [(s.seq, s.kind, s.name, s.status) for s in steps] == [
        (1, "llm", "r", "ok"),
        (2, "tool", "lookup", "ok"),
        (3, "tool", "send", "halted"),
        (4, "tool", "lookup", "error"),
        (5, "tool", "lookup", "replayed"),
    ]
    assert steps[0].output == {"text": "ok", "tool_calls": []}
    assert (steps[0].input_tokens, steps[0].output_tokens) == (5, 7)
    assert steps[1].input == {"id": 3} and steps[1].idempotency_key == "k-1"
    assert steps[2].error == "policy.denied: no"
    assert steps[3].error == "ValueError: bad input"

    run = await store.get_run(ctx.run_id)
    assert run is not None
    # Only calls that ran to success count toward the run's totals.
    assert (run.steps, run.tool_calls, run.input_tokens, run.output_tokens) == (2, 1, 5, 7)
    assert ctx.record == run

    entries = await store.list_audit()
    assert [e.payload["status"] for e in entries] == ["ok", "ok", "halted", "error", "replayed"]
    assert (await audit.verify()).ok

    assert [v.seq for v in ctx.recent] == [1, 2, 3, 4, 5]
    assert ctx.recent[0].input == {"messages": 1, "last": {"role": "user", "content": "hi"}}
    assert ctx.recent[1].input == {"id": 3}


async def test_a_growing_conversation_stores_only_what_each_call_adds(
    store: SQLiteStore,
) -> None:
    ctx = context()
    await store.create_run(ctx.record)
    gate = RecordGate(store, AuditLog(store))
    first = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    second = [*first, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "and?"}]
    other = [{"role": "user", "content": "a new conversation"}]
    for sent in (first, [dict(m) for m in second], second, other):  # equal, not identical
        await gate(LLMCall("r", sent), ctx, Echo())
    steps = await store.list_steps(ctx.run_id)
    assert [s.input for s in steps] == [
        {"messages": first},
        {"messages_from": 2, "messages": second[2:]},
        {"messages_from": 3, "messages": second[3:]},  # sent again: the last message shown
        {"messages": other},
    ]
    assert [view.input["messages"] for view in ctx.recent] == [2, 4, 4, 1]
    assert [view.input["last"] for view in ctx.recent][1:3] == [second[-1], second[-1]]


async def test_a_conversation_grown_in_place_stores_every_added_message(
    store: SQLiteStore,
) -> None:
    # The SDK's agents append to one list and pass it again: what was added must be kept.
    ctx = context()
    await store.create_run(ctx.record)
    gate = RecordGate(store, AuditLog(store))
    conversation: list[dict[str, object]] = [{"role": "user", "content": "hi"}]
    await gate(LLMCall("r", conversation), ctx, Echo())
    added = [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}]
    conversation += added
    await gate(LLMCall("r", conversation), ctx, Echo())
    steps = await store.list_steps(ctx.run_id)
    assert steps[1].input == {"messages_from": 1, "messages": added}
