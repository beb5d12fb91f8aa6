"""The durable records a Store keeps, one frozen dataclass per table.

Timestamps are float epoch seconds. Fields typed `Json` hold any value orjson can
encode; the store encodes them on write and decodes them on read, so a record read
back compares equal to the one written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from corral.calls import RunStatus

Json: TypeAlias = Any
StepKind: TypeAlias = Literal["llm", "tool"]
# "interrupted": the process serving the call died mid-way; its worst case was charged.
StepStatus: TypeAlias = Literal["ok", "error", "halted", "replayed", "interrupted"]

DeadLetterStatus: TypeAlias = Literal["open", "retried", "dropped"]
ApprovalStatus: TypeAlias = Literal["pending", "approved", "rejected", "timeout"]
Verdict: TypeAlias = Literal["agree", "disagree"]
# The budgets a dead-letter retry can top up (wall_clock in seconds).
TOPUP_KEYS: tuple[str, ...] = ("usd", "tokens", "tool_calls", "steps", "wall_clock")


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of an agent, with its running totals and how it ended.

    `topup` is the budget added on top of the policy's by dead-letter retries, summed
    over all of them: a mapping from TOPUP_KEYS to amounts (wall_clock in seconds), or
    None if the run was never topped up.
    """

    id: str
    agent: str
    agent_type: str
    created_at: float
    updated_at: float
    task: str | None = None
    session: str | None = None
    status: RunStatus = RunStatus.RUNNING
    halt_reason: str | None = None
    ended_at: float | None = None
    trace_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    steps: int = 0
    tool_calls: int = 0
    outcome: Json = None
    error: str | None = None
    kill_requested_at: float | None = None
    time_to_safe_fail_ms: float | None = None
    last_checkpoint_id: int | None = None
    parent_run_id: str | None = None
    topup: Json = None
    # The lease of the process serving the run; None once nobody does (ended, or
    # recovered after its process died, waiting to be resumed).
    owner: str | None = None
    # A run of one request (a gateway request without a session): nobody resumes it, so
    # if its process dies mid-call recovery halts it with `interrupted`.
    oneshot: bool = False
    # Seconds its calls waited for a human (approvals): not counted by its wall-clock cap.
    waiting_s: float = 0.0
    # The span id of the run's first trace's root span (`trace_id` is that trace's id):
    # the traces of its later requests at the gateway link to it.
    trace_span: str | None = None


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One model or tool call of a run; `seq` counts a run's steps from 1."""

    run_id: str
    seq: int
    kind: StepKind
    name: str
    input: Json
    started_at: float
    ended_at: float
    output: Json = None
    status: StepStatus = "ok"
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    idempotency_key: str | None = None
    model_used: str | None = None


@dataclass(frozen=True, slots=True)
class InflightRecord:
    """The write-ahead record of a call on its way upstream: its worst case, held.

    Written (durably) before the call leaves, deleted in the transaction that records
    its step. One still present when its owner's process is gone is a call whose fate is
    unknown: recovery charges its worst case as an `interrupted` step.
    """

    id: str
    run_id: str
    owner: str
    seq: int  # the run's call number
    kind: StepKind
    name: str
    started_at: float
    input_tokens: int  # the worst case: the input bound and the clamped max output
    output_tokens: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """A live process serving runs: it renews `heartbeat_at` while it has runs open."""

    owner: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float


@dataclass(frozen=True, slots=True)
class Spending:
    """What a set of runs spent, as the budget counters count it: steps are the calls
    answered (even if a halt followed) or interrupted."""

    usd: float = 0.0
    tokens: int = 0
    steps: int = 0
    tool_calls: int = 0


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """A run's state as of a step; `id` is assigned by the store and only grows."""

    id: int
    run_id: str
    step: int
    state: Json
    created_at: float


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A halted run's escalation packet, waiting for a human to retry or drop it."""

    id: int
    run_id: str
    reason: str
    packet: Json
    status: DeadLetterStatus
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """A tool call waiting for (or decided by) a human.

    `args` are the arguments that would run, as validated and coerced, and `args_hash`
    binds the approval to them: a call with other arguments needs an approval of its
    own. A reviewer may approve with edited arguments (`approved_args`), which then run
    instead. `call_key` finds the approval again for the same call (its idempotency key;
    at the gateway, the model's tool call id), `request_key` for the same gateway request
    sent again, whose held model answer is `answer`. `panel` is what the reviewer sees.
    """

    id: str
    run_id: str
    step: int
    tool: str
    args: Json
    rule: str
    requested_at: float
    timeout_at: float
    status: ApprovalStatus = "pending"
    decided_at: float | None = None
    decided_by: str | None = None
    note: str | None = None  # the reviewer's note, or a rejection's feedback
    agent: str = ""
    call_key: str | None = None
    request_key: str | None = None
    args_hash: str = ""
    approved_args: Json = None
    escalations: int = 0  # times it was escalated (and given a fresh timeout)
    panel: Json = None
    answer: Json = None


@dataclass(frozen=True, slots=True)
class ProposalRecord:
    """A write a run in shadow mode proposed instead of running, and a human's verdict."""

    id: str
    run_id: str
    agent: str
    tool: str
    args: Json
    scope: str
    proposed_at: float
    result: Json = None  # what the agent was given in place of the tool's result
    verdict: Verdict | None = None
    reviewed_by: str | None = None
    reviewed_at: float | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The recorded result of a tool call, replayed when the same key comes again."""

    key: str
    run_id: str
    result: Json
    created_at: float


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """A blob a run produced, addressed by its handle."""

    handle: str
    run_id: str
    content: bytes
    media_type: str
    created_at: float


@dataclass(frozen=True, slots=True)
class AgentKeyRecord:
    """An API key, kept only as its hash; `agent` is None for admin keys."""

    id: str
    key_hash: str
    prefix: str
    agent: str | None
    admin: bool
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One link of the hash-chained audit log; the audit module computes the hashes."""

    seq: int
    ts: float
    kind: str
    run_id: str | None
    payload: Mapping[str, Json]
    prev_hash: str
    hash: str
