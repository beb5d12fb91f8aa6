"""The Store interface: durable records shared by every process of a deployment.

Each method is one logical read or write; a write is one transaction, so a crash
leaves it either whole or absent. Implementations report a broken constraint or an
unknown schema with the errors below rather than their driver's, so callers do not
depend on the backend.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self, TypeAlias

from corral.calls import RunStatus
from corral.state.records import (
    TOPUP_KEYS,
    AgentKeyRecord,
    ApprovalRecord,
    ApprovalStatus,
    ArtifactRecord,
    AuditEntry,
    CheckpointRecord,
    DeadLetterRecord,
    DeadLetterStatus,
    IdempotencyRecord,
    InflightRecord,
    Json,
    LeaseRecord,
    ProposalRecord,
    RunRecord,
    Spending,
    StepRecord,
    Verdict,
)


class StoreError(Exception):
    """Base of the errors a Store raises."""


class SchemaVersionError(StoreError):
    """The database was written by a newer Corral than this one."""


class ConstraintError(StoreError, ValueError):
    """A write broke a constraint: a duplicate key, an unknown run, a value out of range."""


class NotFoundError(StoreError, LookupError):
    """A write addressed a record that does not exist."""


def add_topup(total: Json, topup: Mapping[str, float]) -> dict[str, float] | None:
    """`total` (a run's stored topup, None if never topped up) plus `topup`, per key.

    ValueError naming the key if one is not in TOPUP_KEYS or its amount is not a
    finite non-negative number: a typo must not be stored as a budget nobody reads.
    """
    summed: dict[str, float] = dict(total or {})
    for key, amount in topup.items():
        if key not in TOPUP_KEYS:
            raise ValueError(f"topup key {key!r} is not one of {', '.join(TOPUP_KEYS)}")
        if (
            isinstance(amount, bool)
            or not isinstance(amount, int | float)
            or not math.isfinite(amount)
            or amount < 0
        ):
            raise ValueError(f"topup {key!r} must be a non-negative number, got {amount!r}")
        summed[key] = summed.get(key, 0) + amount
    return summed or None


# What `corral graph` and `corral report` read: a step "failed" in one of these statuses.
FAILED_STEP_STATUSES: tuple[str, ...] = ("error", "halted", "interrupted")
# The percentile step_stats works out for each hop (nearest rank, as nearest_rank does).
STEP_PERCENTILE = 95
StatsGroup: TypeAlias = Literal["agent", "agent_type"]


def nearest_rank(values: Sequence[float], pct: int) -> float | None:
    """The `pct`th percentile of `values` by nearest rank: the smallest value that at
    least pct% of them are at or below (p50 of 1, 2, 3, 4 is 2; p95 of 1..20 is 19).
    None for no values. The store's SQL ranks the same way, so its figures agree."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, -(-len(ordered) * pct // 100)) - 1]


@dataclass(frozen=True, slots=True)
class StepStats:
    """The steps that started in a window, of one hop of one agent (or agent type).

    `hop` is the model a "llm" step used (its model_used, else its name) or the tool a
    "tool" step called; `errors` counts the steps in FAILED_STEP_STATUSES; `p95_s` is
    the STEP_PERCENTILE of their durations (ended_at - started_at) in seconds.
    """

    group: str
    kind: Literal["llm", "tool"]
    hop: str
    calls: int
    errors: int
    cost_usd: float
    p95_s: float


@dataclass(frozen=True, slots=True)
class RunOrigin:
    """Which agent a run came from: the agent of its parent run (None if it has none),
    and the agent of the first run of its session, over all the session's runs (None
    if it has no session)."""

    run_id: str
    parent_agent: str | None
    session_opener: str | None


class Store(ABC):
    """Durable records: runs, steps, checkpoints, dead letters, approvals, keys, audit."""

    # What the store does to the values it keeps for people and telemetry (PII redacted),
    # None if it keeps them as given. The audit log applies it to an entry's payload
    # before hashing it, which the store cannot do once the entry is sealed.
    redactor: Callable[[Json], Json] | None = None

    # runs

    @abstractmethod
    async def create_run(self, run: RunRecord) -> None:
        """Insert a new run; ConstraintError if the id is taken."""

    @abstractmethod
    async def save_run(self, run: RunRecord) -> None:
        """Write every column except kill_requested_at, which only request_kill sets.

        last_checkpoint_id never moves backwards: add_checkpoint may have advanced it
        since the caller read the run. NotFoundError if the run does not exist.
        """

    @abstractmethod
    async def get_run(self, run_id: str) -> RunRecord | None: ...

    @abstractmethod
    async def list_runs(
        self,
        *,
        limit: int = 50,
        status: RunStatus | None = None,
        agent: str | None = None,
        session: str | None = None,
    ) -> list[RunRecord]:
        """Newest first."""

    @abstractmethod
    async def request_kill(self, run_id: str, at: float) -> bool:
        """Mark a running run to be killed; False if there is no such run or it has ended.

        A second request keeps the first time, from which time-to-safe-fail is measured.
        """

    @abstractmethod
    async def kill_requests(self) -> dict[str, float]:
        """{run id: kill_requested_at} of the running runs an operator asked to kill.

        One cheap query: the runtime polls it several times a second.
        """

    @abstractmethod
    async def halt_run(self, run: RunRecord, packet: Json) -> DeadLetterRecord:
        """Save a halted run and queue its packet as an open dead letter, atomically.

        The caller sets status halted, halt_reason (the dead letter's reason) and
        ended_at; the run is saved as by save_run. ConstraintError if the run is not
        halted or has no halt_reason; NotFoundError if it does not exist; orjson's
        TypeError if the packet cannot be encoded. Either way nothing is written.
        """

    @abstractmethod
    async def reopen_run(self, run_id: str, *, topup: Mapping[str, float], at: float) -> RunRecord:
        """Set a halted run running again with more budget, atomically; return it.

        Clears halt_reason, ended_at, kill_requested_at and time_to_safe_fail_ms, sets
        updated_at to `at`, adds `topup` to the run's topup (see add_topup, whose
        ValueError it raises before writing) and marks the run's open dead letters
        "retried". NotFoundError if there is no such run; ConstraintError if it is not
        halted or its newest dead letter was dropped (an operator decided it stays
        halted).
        """

    @abstractmethod
    async def claim_run(
        self, run_id: str, owner: str, *, dead: Collection[str], unowned: bool = True
    ) -> RunRecord | None:
        """Make `owner` the running run's owner, atomically, if nobody else serves it: its
        owner is `owner` already, one of `dead`, a process with no lease at all, or (with
        `unowned`) None. The run as claimed; None if it is not running or someone live
        owns it. Of two processes racing to claim one run, one wins."""

    @abstractmethod
    async def orphaned_runs(self, dead: Collection[str]) -> list[RunRecord]:
        """Running runs whose owner is one of `dead` or has no lease: their process is gone."""

    @abstractmethod
    async def spending(
        self,
        *,
        session: str | None = None,
        agents: Collection[str] | None = None,
        agent_type: str | None = None,
        since: float | None = None,
    ) -> Spending:
        """What the runs matching every filter given spent, counted as the budget counts.

        With `session` (and `agents`), the runs' totals; with `since`, the steps that
        started at or after it (of runs of `agent_type` if given), which is what a fixed
        budget window holds."""

    # write-ahead records of calls in flight, and the leases of the processes serving runs

    @abstractmethod
    async def begin_call(self, record: InflightRecord) -> None:
        """Store the record durably before the call goes upstream; the step that records
        the call's end deletes it (record_step's `settles`). ConstraintError if its id is
        taken; NotFoundError-free: an unknown run is a ConstraintError too."""

    @abstractmethod
    async def inflight(self, run_id: str) -> list[InflightRecord]:
        """The run's calls begun and never recorded, oldest first."""

    @abstractmethod
    async def renew_lease(self, lease: LeaseRecord) -> None:
        """Insert the lease, or move its heartbeat_at."""

    @abstractmethod
    async def list_leases(self) -> list[LeaseRecord]: ...

    @abstractmethod
    async def drop_leases(self, owners: Collection[str]) -> None:
        """Forget these leases (their processes ended or were recovered from)."""

    # steps

    @abstractmethod
    async def add_steps(self, steps: Sequence[StepRecord]) -> None:
        """Insert all the steps in one transaction: all of them are stored or none."""

    @abstractmethod
    async def record_step(
        self,
        run: RunRecord,
        step: StepRecord,
        seal: Callable[[AuditEntry | None], AuditEntry] | None = None,
        *,
        settles: str | None = None,
    ) -> None:
        """Insert the step and save the run's totals (steps, tool_calls, tokens, cost_usd,
        updated_at; nothing else of the run) in one transaction, with the step's audit
        entry too when `seal` is given (see append_audit), and the in-flight record
        `settles` deleted.

        ConstraintError if the step belongs to another run or its seq is taken;
        NotFoundError if the run does not exist. Either way nothing is written.
        """

    @abstractmethod
    def queue_step(
        self,
        run: RunRecord,
        step: StepRecord,
        seal: Callable[[AuditEntry | None], AuditEntry] | None = None,
        *,
        settles: str | None = None,
    ) -> None:
        """record_step without waiting for the disk: returns at once, and the step is
        written in order with the store's other operations, so any later read or write
        of this store object sees it. A failure is logged, not raised; ConstraintError
        at once for a step of another run. A crash loses only steps still queued.
        """

    @abstractmethod
    async def list_steps(self, run_id: str, *, last: int | None = None) -> list[StepRecord]:
        """A run's steps by seq; with `last`, only the last that many."""

    # checkpoints

    @abstractmethod
    async def add_checkpoint(self, run_id: str, step: int, state: Json) -> CheckpointRecord:
        """Store a checkpoint and make it the run's last_checkpoint_id, atomically."""

    @abstractmethod
    async def get_checkpoint(self, checkpoint_id: int) -> CheckpointRecord | None: ...

    @abstractmethod
    async def last_checkpoint(self, run_id: str) -> CheckpointRecord | None: ...

    # dead letters

    @abstractmethod
    async def add_dead_letter(self, run_id: str, reason: str, packet: Json) -> DeadLetterRecord:
        """Queue a halted run's packet with status "open"."""

    @abstractmethod
    async def get_dead_letter(self, dead_letter_id: int) -> DeadLetterRecord | None: ...

    @abstractmethod
    async def list_dead_letters(
        self, *, status: DeadLetterStatus | None = "open"
    ) -> list[DeadLetterRecord]:
        """Oldest first; status None lists all."""

    @abstractmethod
    async def dead_letter_for_run(self, run_id: str) -> DeadLetterRecord | None:
        """The run's newest dead letter, whatever its status; None if it has none."""

    @abstractmethod
    async def set_dead_letter_status(
        self,
        dead_letter_id: int,
        status: DeadLetterStatus,
        *,
        only_if: DeadLetterStatus | None = None,
    ) -> bool:
        """False if there is no such dead letter, or, with `only_if`, it has another status.

        The check and the write are one atomic step, so of two operators racing to
        settle an open dead letter exactly one wins.
        """

    # approvals

    @abstractmethod
    async def add_approval(self, approval: ApprovalRecord) -> None: ...

    @abstractmethod
    async def get_approval(self, approval_id: str) -> ApprovalRecord | None: ...

    @abstractmethod
    async def list_approvals(
        self, *, status: ApprovalStatus | None = None, run_id: str | None = None
    ) -> list[ApprovalRecord]:
        """Oldest request first."""

    @abstractmethod
    async def find_approvals(
        self, *, call_key: str | None = None, request_key: str | None = None
    ) -> list[ApprovalRecord]:
        """The approvals of one call or of one gateway request, newest first."""

    @abstractmethod
    async def approvals_by_id(self, ids: Collection[str]) -> list[ApprovalRecord]:
        """The approvals with these ids (unknown ids are left out), in one read."""

    @abstractmethod
    async def decide_approval(
        self,
        approval_id: str,
        status: ApprovalStatus,
        *,
        by: str | None,
        at: float,
        note: str | None = None,
        args: Json = None,
    ) -> bool:
        """Decide a pending approval; False if it is unknown or already decided.
        `args`, for an approval with edited arguments, are the ones that run.

        The check and the write are one atomic step, so of two racing deciders
        exactly one wins. ValueError if `status` is "pending".
        """

    @abstractmethod
    async def escalate_approval(
        self, approval_id: str, *, escalations: int, timeout_at: float
    ) -> bool:
        """Escalate a pending approval escalated `escalations` times so far: count one more
        and move its timeout. False if it was decided or escalated meanwhile (one wins)."""

    # shadow proposals

    @abstractmethod
    async def add_proposal(self, proposal: ProposalRecord) -> None: ...

    @abstractmethod
    async def get_proposal(self, proposal_id: str) -> ProposalRecord | None: ...

    @abstractmethod
    async def list_proposals(
        self, *, agent: str | None = None, tool: str | None = None
    ) -> list[ProposalRecord]:
        """Oldest first."""

    @abstractmethod
    async def review_proposal(
        self, proposal_id: str, verdict: Verdict, *, by: str, at: float, note: str | None = None
    ) -> bool:
        """Record a human's verdict on a proposal not reviewed yet; False if it is unknown or
        was reviewed already (one verdict per proposal, the first)."""

    # idempotency

    @abstractmethod
    async def get_idempotent(self, key: str) -> IdempotencyRecord | None: ...

    @abstractmethod
    async def put_idempotent(self, record: IdempotencyRecord) -> IdempotencyRecord:
        """Store the record unless the key exists; return the record stored under the key."""

    # artifacts

    @abstractmethod
    async def put_artifact(self, artifact: ArtifactRecord) -> None:
        """ConstraintError if the handle is taken: content is never silently replaced."""

    @abstractmethod
    async def get_artifact(self, handle: str) -> ArtifactRecord | None: ...

    # agent keys

    @abstractmethod
    async def add_agent_key(self, key: AgentKeyRecord) -> None: ...

    @abstractmethod
    async def find_agent_key(self, key_hash: str) -> AgentKeyRecord | None:
        """The key with that hash, revoked and expired ones included: the caller decides."""

    @abstractmethod
    async def list_agent_keys(self) -> list[AgentKeyRecord]:
        """Oldest first."""

    @abstractmethod
    async def revoke_agent_key(self, key_id: str, at: float) -> bool:
        """False if there is no such key or it is already revoked."""

    # audit

    @abstractmethod
    async def append_audit(self, seal: Callable[[AuditEntry | None], AuditEntry]) -> AuditEntry:
        """Append one entry to the audit log, excluding every other writer meanwhile.

        `seal` gets the last entry (None for an empty log) and returns the new one; it
        runs inside the write transaction, so it must be quick and must not touch the
        store. The head (seq, hash) is updated in the same transaction.
        """

    @abstractmethod
    async def list_audit(self) -> list[AuditEntry]:
        """Every entry in insertion order, which does not trust the stored seq."""

    @abstractmethod
    async def audit_head(self) -> tuple[int, str] | None:
        """(seq, hash) of the last entry appended, None if nothing was."""

    # retention

    @abstractmethod
    async def purge(
        self,
        *,
        steps_before: float | None,
        artifacts_before: float | None,
        dead_letters_before: float | None,
        answers_before: float | None = None,
        dry_run: bool,
    ) -> dict[str, int]:
        """Delete what is older than each cutoff (None: keep it all); the rows removed (or,
        with `dry_run`, that would be) per table, and nothing written on a dry run.

        `steps_before`: steps that started before it, with the checkpoints and idempotent
        results recorded before it; `artifacts_before`: artifacts created before it. Never
        those of a run still running or with an open dead letter, which may go on and
        replay them; steps a windowed cap counts are the caller's to keep, by passing no
        cutoff later than that window's start. `dead_letters_before`: dead letters retried
        or dropped before it (open ones stay). `answers_before`: the held model answers of
        gateway requests whose approvals were all decided before it, which nothing reads
        once a request sent again is no longer answered from them. Runs (whose totals the
        session and task caps count), approvals, proposals and the audit log are kept.
        """

    # observability (corral graph, corral report)

    @abstractmethod
    async def runs_between(self, since: float, until: float) -> list[RunRecord]:
        """The runs created at or after `since` and before `until`, oldest first."""

    @abstractmethod
    async def run_origins(self, since: float, until: float) -> list[RunOrigin]:
        """The origins of the runs created in the window that have a parent or a
        session (the others came from nobody), oldest first, in one read."""

    @abstractmethod
    async def step_stats(
        self, since: float, until: float, *, by: StatsGroup = "agent"
    ) -> list[StepStats]:
        """The steps that started at or after `since` and before `until`, summed per
        hop and per their run's agent (or, `by` "agent_type", its agent type), ordered
        by group, kind and hop. One read: the sums and the percentile are worked out by
        the store, not by fetching every step."""

    # lifecycle

    @abstractmethod
    async def close(self) -> None:
        """Release the connection; safe to call twice."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
