"""The values that flow through the pipeline: calls, their usage, and halts.

Plain slotted dataclasses, not pydantic models: they are built on every call,
and validation belongs at the edges (policy load, HTTP parsing), not here.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import orjson


class HaltReason(StrEnum):
    """Why a run stopped. The string values are part of the public API."""

    BUDGET_TOKENS = "budget.tokens"
    BUDGET_COST = "budget.cost"
    BUDGET_TOOL_CALLS = "budget.tool_calls"
    BUDGET_STEPS = "budget.steps"
    TIMEOUT = "timeout"
    LOOP_REPEAT = "loop.repeat"
    LOOP_SIMILAR = "loop.similar"
    LOOP_NO_PROGRESS = "loop.no_progress"
    LOOP_ERROR_REPEAT = "loop.error_repeat"
    LOOP_PING_PONG = "loop.ping_pong"
    CIRCUIT_OPEN = "circuit_open"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    GUARD_INPUT = "guard.input"
    GUARD_OUTPUT = "guard.output"
    POLICY_DENIED = "policy.denied"
    APPROVAL_REJECTED = "approval.rejected"
    APPROVAL_TIMEOUT = "approval.timeout"
    CONTEXT_OVERFLOW = "context_overflow"
    KILLED = "killed"
    INTERRUPTED = "interrupted"  # the process serving the run died mid-call
    ERROR = "error"


class RunStatus(StrEnum):
    """Lifecycle of a run as stored."""

    RUNNING = "running"
    COMPLETED = "completed"
    HALTED = "halted"


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a call consumed. Cache tokens are counted apart so prices stay right."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )


_call_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class StreamDelta:
    """A piece of a streamed answer, in no provider's format: text, or part of a tool call."""

    text: str = ""
    tool_index: int | None = None
    tool_id: str | None = None
    tool_name: str | None = None
    tool_arguments: str = ""
    # Nothing to show, only "still here": sent while an answer waits for a human, so
    # the connection is not taken for dead (the gateway writes an SSE comment).
    keepalive: bool = False


# Where a streamed call's deltas go, as they arrive.
StreamSink = Callable[[StreamDelta], Awaitable[None]]


@dataclass(slots=True)
class LLMCall:
    """A request to a model, named by a policy model or route.

    With a `sink` the call streams: the transport hands each delta to it as it
    arrives and still returns the whole LLMResult at the end, so every gate sees a
    streamed call as one call. `delivered` turns true once a delta has reached the
    sink; from then on nothing may retry the call or fall back to another model.
    """

    model: str
    messages: Sequence[Mapping[str, Any]]
    params: Mapping[str, Any] = field(default_factory=dict)
    max_tokens: int | None = None
    sink: StreamSink | None = None
    target: str | None = None  # the policy model the route gate chose for this attempt
    delivered: bool = False
    # estimate_input_tokens' figure, with the messages it was worked out for
    input_bound: tuple[Sequence[Mapping[str, Any]], int] | None = field(default=None, repr=False)
    # perf_counter time the current attempt reached the transport, and the seconds spent
    # upstream by attempts that ended: what the gateway subtracts to report its overhead
    upstream_started: float | None = field(default=None, repr=False)
    upstream_seconds: float = field(default=0.0, repr=False)
    # Seconds the retry gate slept between attempts (not Corral's overhead either), and
    # what the tightest USD cap had left once the budget gate settled the call.
    retry_wait: float = field(default=0.0, repr=False)
    budget_left_usd: float | None = field(default=None, repr=False)
    attempts: int = field(default=0, repr=False)  # upstream attempts begun (retry gate)
    fallback_from: str | None = field(default=None, repr=False)  # the model the route left
    # The write-ahead record of this call while it is out (set by the budget gate); the
    # record gate's step deletes it.
    inflight: str | None = field(default=None, repr=False)
    # The gateway's fingerprint of the request (agent and body): the same request sent
    # again is answered from the approvals its first answer is waiting for.
    request_key: str | None = field(default=None, repr=False)
    # The JSON schema the answer must match (an SDK `schema=` model, or the request's
    # response_format); the output guard checks it and asks once for a repair.
    schema: Mapping[str, Any] | None = field(default=None, repr=False)
    # Made by a guard (a schema repair): its own held call, not checked by that guard.
    guard_made: bool = field(default=False, repr=False)
    kind: Literal["llm"] = "llm"
    id: int = field(default_factory=lambda: next(_call_ids))


@dataclass(slots=True)
class ToolCall:
    """A request to run a tool; a replay with the same idempotency key returns the first result.

    `reported` is set when the agent ran the tool itself and only reports it (the gateway
    learns of tool calls from the conversation), or when shadow mode answers the call
    with a stand-in: it passes every gate as any tool call, and the transport returns it
    instead of running a registered tool.
    """

    name: str
    args: Mapping[str, Any]
    idempotency_key: str | None = None
    reported: ToolResult | None = None
    inflight: str | None = field(default=None, repr=False)  # as LLMCall.inflight
    # What the reviewer of an approval is shown: why the agent makes the call, and what
    # it expects to happen.
    reason: str | None = None
    expected: str | None = None
    # A reported call's tool call id, as the model gave it: its approval is found by it.
    origin: str | None = None
    kind: Literal["tool"] = "tool"
    id: int = field(default_factory=lambda: next(_call_ids))


Call = LLMCall | ToolCall


def estimate_input_tokens(call: LLMCall) -> int:
    """An upper bound on the prompt's tokens: no tokenizer emits more tokens than UTF-8
    bytes, and JSON framing costs more bytes than the tokens a chat template adds.

    Several gates ask per call, so the figure is kept on the call for as long as its
    messages are the same object (a gate that rewrites the prompt replaces them)."""
    cached = call.input_bound
    if cached is not None and cached[0] is call.messages:
        return cached[1]
    size = len(orjson.dumps(call.messages))
    tools = call.params.get("tools")
    if tools:
        size += len(orjson.dumps(tools))
    call.input_bound = (call.messages, size)
    return size


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """A tool call a model asked for in its reply."""

    id: str
    name: str
    arguments: str  # the model's JSON text, kept verbatim: it may be malformed


@dataclass(slots=True)
class LLMResult:
    """What a model answered."""

    text: str
    usage: Usage
    model: str  # the policy model that answered
    tool_calls: tuple[ToolCallRequest, ...] = ()
    finish_reason: str | None = None
    raw: Any = None
    cost_usd: float = 0.0  # set by the budget gate when it settles
    # Answered from an earlier call's record (a held answer sent again once approved):
    # its cost was counted by that call.
    replayed: bool = False


@dataclass(slots=True)
class ToolResult:
    """What a tool returned; `replayed` is true when it came from the idempotency record."""

    value: Any
    replayed: bool = False


Result = LLMResult | ToolResult


class Halt(Exception):
    """Raised by a gate to stop the run. Carries a stable reason code and the numbers behind it.

    `detail` names the rule that fired and its figures, e.g.
    ``{"level": "session", "dimension": "usd", "limit": 0.5, "used": 0.49, "needed": 0.02}``;
    it goes into the escalation packet as-is.
    """

    def __init__(
        self, reason: HaltReason, message: str, detail: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message
        self.detail: Mapping[str, Any] = detail or {}
        self.raised_at = time.perf_counter()  # the rule fired: time-to-safe-fail starts
        # What the halted call consumed before the halt was decided (an answer a loop
        # halt follows, a cut stream's tokens): the record gate puts it on the step.
        self.spent: LLMResult | None = None


class Denied(PermissionError):
    """A run the policy does not allow to start (`policy.denied`), e.g. with a parent run
    of another team's agent. Nothing was recorded: there is no run."""

    reason = HaltReason.POLICY_DENIED

    def __init__(self, message: str, detail: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{self.reason.value}: {message}")
        self.message = message
        self.detail: Mapping[str, Any] = detail or {}


class Rejected(Exception):
    """A reviewer rejected the tool call: the agent gets their feedback and may replan.

    Not a halt: the run goes on (unless the rule says `on_reject: halt`)."""

    def __init__(self, tool: str, feedback: str, approval_id: str) -> None:
        super().__init__(f"tool call '{tool}' rejected by a reviewer: {feedback}")
        self.tool = tool
        self.feedback = feedback
        self.approval_id = approval_id


class ApprovalPending(Exception):
    """The gateway held an answer for its approvals as long as it may: the client is told
    to send the same request again later (429 approval_pending).

    `spent` is the model's answer being held: the record gate puts its cost on the step."""

    def __init__(self, approval_ids: Sequence[str], retry_after: float) -> None:
        ids = ", ".join(approval_ids)
        super().__init__(f"waiting for approval {ids}: send the same request again later")
        self.approval_ids = tuple(approval_ids)
        self.retry_after = retry_after
        self.spent: LLMResult | None = None


class UpstreamUnavailable(Exception):
    """No model on the call's route answered (`provider_unavailable`, `circuit_open`) or
    could take the prompt (`context_overflow`), on a run told not to halt for that.

    The gateway's runs are: a provider outage fails the request, not the agent's session.
    """

    def __init__(self, reason: HaltReason, message: str, detail: Mapping[str, Any]) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message
        self.detail = detail


# The halts a route gives when its models fail, not when the agent misbehaves.
UPSTREAM_REASONS = frozenset(
    {HaltReason.PROVIDER_UNAVAILABLE, HaltReason.CIRCUIT_OPEN, HaltReason.CONTEXT_OVERFLOW}
)


class Halted(Exception):
    """What the caller of a run gets when the run was halted: the reason and the packet.

    Not retryable by design: the run is over until an operator retries it from the
    dead-letter queue.
    """

    def __init__(self, reason: HaltReason, message: str, run_id: str, packet: Mapping[str, Any]):
        super().__init__(f"run {run_id} halted: {reason.value}: {message}")
        self.reason = reason
        self.message = message
        self.run_id = run_id
        self.packet = packet
