"""The idempotency gate: a key that already ran replays its result, never the tool."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral.calls import Call, LLMCall, Result, ToolCall, ToolResult
from corral.gates.base import RunContext
from corral.gates.idempotency import IdempotencyGate
from corral.state import IdempotencyRecord, SQLiteStore

from .conftest import Echo, context, messages


async def test_second_call_with_the_same_key_replays(store: SQLiteStore) -> None:
    ctx, transport = context(), Echo()
    await store.create_run(ctx.record)
    gate = IdempotencyGate(store)
    first = await gate(ToolCall("lookup", {"id": 1}, "k-1"), ctx, transport)
    again = await gate(ToolCall("lookup", {"id": 1}, "k-1"), ctx, transport)
    assert isinstance(first, ToolResult) and isinstance(again, ToolResult)
    assert len(transport.calls) == 1
    assert again.replayed and not first.replayed
    assert again.value == first.value


async def test_a_failed_call_records_nothing_and_runs_again(store: SQLiteStore) -> None:
    ctx = context()
    await store.create_run(ctx.record)
    attempts = 0

    async def flaky(call: Call, ctx: RunContext) -> Result:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("down")
        return ToolResult("done")

    gate = IdempotencyGate(store)
    with pytest.raises(ConnectionError):
        await gate(ToolCall("lookup", {}, "k"), ctx, flaky)
    assert await gate(ToolCall("lookup", {}, "k"), ctx, flaky) == ToolResult("done")
    assert attempts == 2


async def test_concurrent_duplicates_get_the_first_answer(store: SQLiteStore) -> None:
    ctx = context()
    await store.create_run(ctx.record)
    counter = iter(range(100))

    async def numbered(call: Call, ctx: RunContext) -> Result:
        await asyncio.sleep(0.01)
        return ToolResult(next(counter))

    gate = IdempotencyGate(store)
    results = await asyncio.gather(
        *(gate(ToolCall("lookup", {}, "same"), ctx, numbered) for _ in range(5))
    )
    assert len({r.value for r in results if isinstance(r, ToolResult)}) == 1


async def test_llm_calls_and_unkeyed_tools_pass_through(store: SQLiteStore) -> None:
    transport = Echo()
    gate = IdempotencyGate(store)
    await gate(LLMCall("r", messages()), context(), transport)
    await gate(ToolCall("lookup", {}), context(), transport)
    assert len(transport.calls) == 2


class SlowStore(SQLiteStore):
    """A store whose idempotency write takes a while, to land a kill in the middle of it."""

    async def put_idempotent(self, record: IdempotencyRecord) -> IdempotencyRecord:
        await asyncio.sleep(0.05)
        return await super().put_idempotent(record)


async def test_a_kill_during_the_write_keeps_the_result_on_record(tmp_path: Path) -> None:
    store = SlowStore(tmp_path / "slow.db")
    ctx = context()
    await store.create_run(ctx.record)
    task = asyncio.create_task(IdempotencyGate(store)(ToolCall("lookup", {}, "k"), ctx, Echo()))
    await asyncio.sleep(0.01)  # the tool body has run; its record is being written
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    kept = await store.get_idempotent("k")
    await store.close()
    assert kept is not None and kept.result == {"tool": "lookup", "args": {}}
