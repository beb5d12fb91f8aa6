"""The allowlist gate: an agent calls only its tools and the models on its route."""

from __future__ import annotations

import pytest

from corral.calls import Halt, HaltReason, LLMCall, ToolCall
from corral.gates.allowlist import AllowlistGate

from .conftest import Echo, context, messages


@pytest.mark.parametrize(
    "call",
    [ToolCall("lookup", {}), LLMCall("r", messages()), LLMCall("m", messages())],
    ids=["own-tool", "own-route", "model-on-route"],
)
async def test_allowed_calls_pass(call: ToolCall | LLMCall) -> None:
    transport = Echo()
    await AllowlistGate()(call, context(), transport)
    assert transport.calls == [call]


async def test_a_tool_outside_the_allowlist_is_denied() -> None:
    transport = Echo()
    with pytest.raises(Halt) as caught:
        await AllowlistGate()(ToolCall("send", {"to": "all"}), context(agent="a"), transport)
    assert caught.value.reason is HaltReason.POLICY_DENIED
    assert caught.value.detail == {"rule": "agents.a.tools", "allowed": ["lookup"]}
    assert "tool 'send' is not allowed for agent 'a'" in caught.value.message
    assert transport.calls == []


async def test_a_model_off_the_route_is_denied() -> None:
    with pytest.raises(Halt) as caught:
        await AllowlistGate()(LLMCall("big", messages()), context(agent="a"), Echo())
    assert caught.value.reason is HaltReason.POLICY_DENIED
    assert caught.value.detail == {"rule": "agents.a.route", "allowed": ["r", "m"]}
