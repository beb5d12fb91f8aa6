"""The kill switch gate halts a killed run before its call goes anywhere."""

from __future__ import annotations

import pytest

from corral.calls import Halt, HaltReason, LLMCall, ToolCall
from corral.gates.kill import KillSwitchGate

from .conftest import Echo, context, messages


async def test_a_live_run_passes() -> None:
    transport = Echo()
    await KillSwitchGate()(ToolCall("lookup", {}), context(), transport)
    assert len(transport.calls) == 1


async def test_a_killed_run_halts_before_the_transport() -> None:
    ctx, transport = context(), Echo()
    ctx.kill_requested_at = 123.0
    with pytest.raises(Halt) as caught:
        await KillSwitchGate()(LLMCall("r", messages()), ctx, transport)
    assert caught.value.reason is HaltReason.KILLED
    assert caught.value.detail["requested_at"] == 123.0
    assert transport.calls == []
