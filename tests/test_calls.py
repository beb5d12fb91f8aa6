"""Calls and halts: stable reason strings and plain value objects."""

from __future__ import annotations

import pytest

from corral import Halt, HaltReason, LLMCall, ToolCall, Usage
from corral.calls import estimate_input_tokens


def test_halt_reasons_are_the_documented_strings() -> None:
    assert {reason.value for reason in HaltReason} == {
        "budget.tokens", "budget.cost", "budget.tool_calls", "budget.steps", "timeout",
        "loop.repeat", "loop.similar", "loop.no_progress", "loop.error_repeat",
        "loop.ping_pong", "circuit_open", "provider_unavailable", "guard.input",
        "guard.output", "policy.denied", "approval.rejected", "approval.timeout",
        "context_overflow", "killed", "interrupted", "error",
    }  # fmt: skip
    assert HaltReason("budget.cost") is HaltReason.BUDGET_COST
    assert f"{HaltReason.KILLED}" == "killed"


def test_halt_carries_reason_message_and_detail() -> None:
    detail = {"level": "session", "dimension": "usd", "limit": 0.5, "used": 0.49}
    with pytest.raises(Halt) as caught:
        raise Halt(HaltReason.BUDGET_COST, "session USD cap reached", detail)
    assert caught.value.reason is HaltReason.BUDGET_COST
    assert caught.value.detail == detail
    assert str(caught.value) == "budget.cost: session USD cap reached"
    assert Halt(HaltReason.ERROR, "boom").detail == {}


def test_usage_adds_up() -> None:
    total = Usage(10, 5) + Usage(1, 2, cache_read_tokens=3, cache_write_tokens=4)
    assert total == Usage(11, 7, 3, 4)
    assert total.total_tokens == 25


def test_calls_get_distinct_ids_and_kinds() -> None:
    first = LLMCall("default", [{"role": "user", "content": "hi"}])
    second = ToolCall("get_customer", {"id": 1})
    assert first.kind == "llm" and second.kind == "tool"
    assert first.id != second.id
    assert second.idempotency_key is None


def test_input_bound_is_worked_out_once_per_prompt() -> None:
    call = LLMCall("r", [{"role": "user", "content": "héllo"}], {"tools": [{"name": "t"}]})
    first = estimate_input_tokens(call)
    assert first >= len("héllo".encode())  # bytes, never fewer: an upper bound
    assert estimate_input_tokens(call) == first and call.input_bound is not None
    call.messages = [{"role": "user", "content": "a much longer prompt than before"}]
    assert estimate_input_tokens(call) > first  # new messages, new figure
