"""The route gate: fall back along the chain on the right failures, never after bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.calls import Call, Halt, HaltReason, LLMCall, LLMResult, Result, ToolCall, Usage
from corral.gates.base import RunContext
from corral.gates.breaker import CircuitOpen
from corral.gates.route import RouteGate
from corral.providers.base import FailureKind, ProviderError
from corral.state import SQLiteStore
from corral.state.counters import BreakerState
from corral.telemetry.audit import AuditLog

from .conftest import Echo, context, messages, policy

CHAIN = """
version: 1
providers: {p: {kind: openai, base_url: "http://127.0.0.1:9/v1"}}
models:
  small: {provider: p, model: s, context_window: 8000}
  wide: {provider: p, model: w, context_window: 128000}
  other: {provider: p, model: o, context_window: 8000}
routes: {main: [small, other, wide]}
agent_types: {t: {}}
agents: {a: {type: t, route: main}}
"""


class Models:
    """A transport where each model fails its own way (or answers)."""

    def __init__(self, **failures: BaseException) -> None:
        self.failures = failures
        self.tried: list[str] = []

    async def __call__(self, call: Call, ctx: RunContext) -> Result:
        assert isinstance(call, LLMCall) and call.target is not None
        self.tried.append(call.target)
        if call.target in self.failures:
            raise self.failures[call.target]
        return LLMResult("ok", Usage(1, 1), model=call.target)


@pytest.fixture
async def audit(tmp_path: Path) -> AsyncIterator[AuditLog]:
    store = SQLiteStore(tmp_path / "corral.db")
    yield AuditLog(store)
    await store.close()


def down(kind: FailureKind) -> ProviderError:
    return ProviderError(kind, f"{kind.value} upstream")


def circuit(model: str) -> CircuitOpen:
    return CircuitOpen(f"breaker:p:{model}", model, 12.0, BreakerState.OPEN)


async def test_the_first_model_that_answers_wins(audit: AuditLog) -> None:
    transport = Models()
    result = await RouteGate(audit)(LLMCall("main", messages()), context(policy(CHAIN)), transport)
    assert isinstance(result, LLMResult) and result.model == "small"
    assert transport.tried == ["small"]


@pytest.mark.parametrize(
    "failure",
    [down(FailureKind.UNAVAILABLE), down(FailureKind.TIMEOUT), down(FailureKind.RATE_LIMITED),
     circuit("small")],
    ids=["unavailable", "timeout", "rate_limited", "circuit_open"],
)  # fmt: skip
async def test_falls_back_and_records_the_event(audit: AuditLog, failure: Exception) -> None:
    ctx = context(policy(CHAIN))
    transport = Models(small=failure)
    result = await RouteGate(audit)(LLMCall("main", messages()), ctx, transport)
    assert isinstance(result, LLMResult) and result.model == "other"
    assert transport.tried == ["small", "other"]
    events = await audit._store.list_audit()
    assert [(e.kind, e.payload["model"]) for e in events] == [("run.fallback", "small")]


@pytest.mark.parametrize(
    "kind", [FailureKind.BAD_REQUEST, FailureKind.AUTH, FailureKind.CONTENT_POLICY]
)
async def test_client_side_failures_do_not_fall_back(audit: AuditLog, kind: FailureKind) -> None:
    transport = Models(small=down(kind))
    with pytest.raises(ProviderError):
        await RouteGate(audit)(LLMCall("main", messages()), context(policy(CHAIN)), transport)
    assert transport.tried == ["small"]


async def test_context_length_skips_to_a_larger_window(audit: AuditLog) -> None:
    transport = Models(small=down(FailureKind.CONTEXT_LENGTH))
    result = await RouteGate(audit)(LLMCall("main", messages()), context(policy(CHAIN)), transport)
    assert isinstance(result, LLMResult) and result.model == "wide"
    assert transport.tried == ["small", "wide"]  # `other` has no more room than `small`


async def test_context_length_with_no_larger_model_halts_context_overflow(
    audit: AuditLog,
) -> None:
    too_long = down(FailureKind.CONTEXT_LENGTH)
    transport = Models(small=too_long, wide=too_long)
    with pytest.raises(Halt) as caught:
        await RouteGate(audit)(LLMCall("main", messages()), context(policy(CHAIN)), transport)
    assert caught.value.reason is HaltReason.CONTEXT_OVERFLOW


async def test_no_fallback_once_the_caller_has_bytes(audit: AuditLog) -> None:
    call = LLMCall("main", messages())

    async def cut_after_bytes(call: Call, ctx: RunContext) -> Result:
        assert isinstance(call, LLMCall)
        call.delivered = True
        raise down(FailureKind.UNAVAILABLE)

    with pytest.raises(ProviderError):
        await RouteGate(audit)(call, context(policy(CHAIN)), cut_after_bytes)
    assert call.target == "small"


async def test_every_breaker_open_halts_circuit_open(audit: AuditLog) -> None:
    transport = Models(small=circuit("small"), other=circuit("other"), wide=circuit("wide"))
    with pytest.raises(Halt) as caught:
        await RouteGate(audit)(LLMCall("main", messages()), context(policy(CHAIN)), transport)
    assert caught.value.reason is HaltReason.CIRCUIT_OPEN
    assert [t["model"] for t in caught.value.detail["tried"]] == ["small", "other", "wide"]


async def test_exhausted_chain_halts_provider_unavailable(audit: AuditLog) -> None:
    transport = Models(
        small=down(FailureKind.UNAVAILABLE), other=circuit("other"), wide=down(FailureKind.TIMEOUT)
    )
    with pytest.raises(Halt) as caught:
        await RouteGate(audit)(LLMCall("main", messages()), context(policy(CHAIN)), transport)
    halt = caught.value
    assert halt.reason is HaltReason.PROVIDER_UNAVAILABLE
    assert halt.detail["rule"] == "routes.main"
    assert "small (unavailable), other (circuit_open), wide (timeout)" in halt.message


async def test_a_model_named_directly_is_a_chain_of_one(audit: AuditLog) -> None:
    transport = Models(wide=down(FailureKind.UNAVAILABLE))
    with pytest.raises(Halt) as caught:
        await RouteGate(audit)(LLMCall("wide", messages()), context(policy(CHAIN)), transport)
    assert caught.value.reason is HaltReason.PROVIDER_UNAVAILABLE
    assert transport.tried == ["wide"]


async def test_tools_pass_through(audit: AuditLog) -> None:
    transport = Echo()
    await RouteGate(audit)(ToolCall("lookup", {}), context(), transport)
    assert len(transport.calls) == 1
