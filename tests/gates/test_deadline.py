"""The deadline gate: no call starts past the wall-clock limit, and none outlives it."""

from __future__ import annotations

import asyncio
import time

import pytest

from corral.calls import Call, Halt, HaltReason, Result, ToolCall
from corral.gates.base import RunContext
from corral.gates.deadline import DeadlineGate

from .conftest import Echo, context


async def test_no_deadline_passes() -> None:
    transport = Echo()
    await DeadlineGate()(ToolCall("lookup", {}), context(), transport)
    assert transport.calls


async def test_past_the_deadline_halts_before_the_call() -> None:
    ctx, transport = context(), Echo()
    ctx.deadline = 100.0
    with pytest.raises(Halt) as caught:
        await DeadlineGate(clock=lambda: 101.0)(ToolCall("lookup", {}), ctx, transport)
    assert caught.value.reason is HaltReason.TIMEOUT
    assert "before the call" in caught.value.message
    assert caught.value.detail["limit_s"] == 100.0
    assert transport.calls == []


async def test_a_call_that_outlives_the_deadline_is_cut_and_halts() -> None:
    ctx = context()
    ctx.deadline = time.time() + 0.05

    async def slow(call: Call, ctx: RunContext) -> Result:
        await asyncio.sleep(5)
        raise AssertionError("not reached")

    with pytest.raises(Halt) as caught:
        await DeadlineGate()(ToolCall("lookup", {}), ctx, slow)
    assert caught.value.reason is HaltReason.TIMEOUT
    assert "during the call" in caught.value.message


async def test_a_timeout_from_below_is_not_mistaken_for_the_deadline() -> None:
    ctx = context()
    ctx.deadline = time.time() + 60

    async def times_out(call: Call, ctx: RunContext) -> Result:
        raise TimeoutError("the tool's own timeout")

    with pytest.raises(TimeoutError, match="the tool's own timeout"):
        await DeadlineGate()(ToolCall("lookup", {}), ctx, times_out)
