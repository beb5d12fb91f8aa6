"""What SQLiteStore and PostgresStore share above their SQL: mixins whose methods are the
same in both stores, each leaving to the store what differs (its statements and how it
runs them: SQLite's worker thread, psycopg's pool).

- StepQueue: record_step, queue_step and begin_call, which turn a step or a write-ahead
  record into a StepWrite (sqlite_steps) for the store's group commit (`_enqueue`).
- Records: the operations on runs, steps and the one-table records that are one
  statement alike in both stores, and their argument checks.
- Approvals: the approval and proposal operations of one statement each.
- Purge: which tables Store.purge clears with which cutoff, counted or done; the store
  gives its conditions and chunk statement and runs them.

Shared statements are written with SQLite's ? placeholders; each store's `_dialect` puts
them in its own (PostgresStore: %s, postgres_tables.dialect). What differs in SQL, or in
how a write of several statements is run, stays in the store's own modules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from corral.calls import RunStatus
from corral.state.records import (
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
    ProposalRecord,
    RunRecord,
    StepRecord,
    Verdict,
)
from corral.state.sqlite_observe import _window
from corral.state.sqlite_steps import StepWrite
from corral.state.sqlite_tables import (
    _AGENT_KEYS,
    _APPROVALS,
    _ARTIFACTS,
    _AUDIT,
    _CHECKPOINTS,
    _DEAD_LETTERS,
    _IDEMPOTENCY,
    _INFLIGHT,
    _PROPOSALS,
    _RUNS,
    _STEPS,
    _TOTALS,
    _dump_opt,
    _load_opt,
    _Table,
)
from corral.state.store import ConstraintError, NotFoundError, add_topup

R = TypeVar("R")
Seal = Callable[[AuditEntry | None], AuditEntry]


class StepQueue:
    """Mixed into both stores: the writes that share group commits, as StepWrites handed
    to the store's `_enqueue`, which batches and writes them."""

    if TYPE_CHECKING:  # what each store provides

        def _enqueue(self, write: StepWrite) -> None: ...

    async def begin_call(self, record: InflightRecord) -> None:
        # In the step writes' group commit: under load one transaction holds the records
        # of many calls going out and the steps of many coming back.
        done = asyncio.get_running_loop().create_future()
        what = f"begin_call {record.id!r} of run {record.run_id!r}"
        self._enqueue(StepWrite(None, None, None, what, done, begins=_INFLIGHT.to_row(record)))
        await done

    async def record_step(
        self,
        run: RunRecord,
        step: StepRecord,
        seal: Seal | None = None,
        *,
        settles: str | None = None,
    ) -> None:
        done = asyncio.get_running_loop().create_future()
        self._enqueue_step(run, step, seal, done, settles)
        await done

    def queue_step(
        self,
        run: RunRecord,
        step: StepRecord,
        seal: Seal | None = None,
        *,
        settles: str | None = None,
    ) -> None:
        self._enqueue_step(run, step, seal, None, settles)

    def _enqueue_step(
        self,
        run: RunRecord,
        step: StepRecord,
        seal: Seal | None,
        done: asyncio.Future[None] | None,
        settles: str | None,
    ) -> None:
        if step.run_id != run.id:
            raise ConstraintError(
                f"record_step: step {step.seq} belongs to run {step.run_id!r}, not {run.id!r}"
            )
        write = StepWrite(
            {"id": run.id, **{c: getattr(run, c) for c in _TOTALS}},
            _STEPS.to_row(step),
            seal,
            f"record_step {step.seq} of run {run.id!r}",
            done,
            settles,
        )
        self._enqueue(write)


class Statements:
    """What the mixins below use of a store: its one-statement helpers, and `_dialect`,
    which turns a statement written with SQLite's ? placeholders into the store's."""

    if TYPE_CHECKING:  # what each store provides
        _clock: Callable[[], float]

        @staticmethod
        def _dialect(sql: str) -> str: ...
        async def _one(self, table: _Table[R], where: str, *args: Any) -> R | None: ...
        async def _all(self, table: _Table[R], where: str, *args: Any) -> list[R]: ...
        async def _insert(self, table: _Table[R], record: R, what: str) -> None: ...
        async def _update(self, sql: str, *args: Any, what: str = "") -> bool: ...


def halted_reason(run: RunRecord) -> str:
    """The halt reason halt_run records; ConstraintError for a run not halted with one."""
    if run.status != RunStatus.HALTED or run.halt_reason is None:
        raise ConstraintError(
            f"halt_run {run.id!r}: the run must be halted with a halt_reason,"
            f" got status {str(run.status)!r} and halt_reason {run.halt_reason!r}"
        )
    return run.halt_reason


# reopen_run's statements, around reopened_topup (PostgresStore locks the row it reads).
REOPEN_FIND = (
    "SELECT status, topup, (SELECT status FROM dead_letters"
    " WHERE run_id = runs.id ORDER BY id DESC LIMIT 1) FROM runs WHERE id = ?"
)
REOPEN_RUN = (
    "UPDATE runs SET status = 'running', halt_reason = NULL, ended_at = NULL,"
    " kill_requested_at = NULL, time_to_safe_fail_ms = NULL, updated_at = ?,"
    " topup = ? WHERE id = ?"
)
RETRY_DEAD_LETTERS = (
    "UPDATE dead_letters SET status = 'retried', updated_at = ?"
    " WHERE run_id = ? AND status = 'open'"
)


def reopened_topup(
    run_id: str, found: Sequence[Any] | None, topup: Mapping[str, float]
) -> str | None:
    """The top-up column of a run reopen_run reopens, from what REOPEN_FIND found of it;
    NotFoundError or ConstraintError for a run it may not reopen."""
    if found is None:
        raise NotFoundError(f"reopen_run: no run {run_id!r}")
    status, total, newest_dead_letter = found
    if status != RunStatus.HALTED:
        raise ConstraintError(f"reopen_run: run {run_id!r} is {status}, not halted")
    if newest_dead_letter == "dropped":
        raise ConstraintError(f"reopen_run: run {run_id!r} was dropped from the dead-letter queue")
    return _dump_opt(add_topup(_load_opt(total), topup))


class Records(Statements):
    """Mixed into both stores: the operations of one statement that both write alike."""

    # runs

    async def create_run(self, run: RunRecord) -> None:
        await self._insert(_RUNS, run, f"create_run {run.id!r}")

    async def get_run(self, run_id: str) -> RunRecord | None:
        return await self._one(_RUNS, self._dialect("WHERE id = ?"), run_id)

    async def list_runs(
        self,
        *,
        limit: int = 50,
        status: RunStatus | None = None,
        agent: str | None = None,
        session: str | None = None,
    ) -> list[RunRecord]:
        if limit < 0:
            raise ValueError(f"list_runs: limit must be >= 0, got {limit}")
        filters = {"status": None if status is None else str(status), "agent": agent}
        filters["session"] = session
        given = {column: value for column, value in filters.items() if value is not None}
        condition = f"WHERE {' AND '.join(f'{column} = ?' for column in given)}" if given else ""
        return await self._all(
            _RUNS,
            self._dialect(f"{condition} ORDER BY created_at DESC, rowid DESC LIMIT ?"),
            *given.values(),
            limit,
        )

    async def request_kill(self, run_id: str, at: float) -> bool:
        return await self._update(
            self._dialect(
                "UPDATE runs SET kill_requested_at = COALESCE(kill_requested_at, ?)"
                " WHERE id = ? AND status = 'running'"
            ),
            at,
            run_id,
            what=f"request_kill {run_id!r}",
        )

    # write-ahead records and steps

    async def inflight(self, run_id: str) -> list[InflightRecord]:
        return await self._all(_INFLIGHT, self._dialect("WHERE run_id = ? ORDER BY rowid"), run_id)

    async def list_steps(self, run_id: str, *, last: int | None = None) -> list[StepRecord]:
        if last is None:
            return await self._all(_STEPS, self._dialect("WHERE run_id = ? ORDER BY seq"), run_id)
        if last < 0:
            raise ValueError(f"list_steps: last must be >= 0, got {last}")
        return await self._all(
            _STEPS,
            self._dialect(
                "WHERE run_id = ? AND seq IN"
                " (SELECT seq FROM steps WHERE run_id = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq"
            ),
            run_id,
            run_id,
            last,
        )

    # checkpoints

    async def get_checkpoint(self, checkpoint_id: int) -> CheckpointRecord | None:
        return await self._one(_CHECKPOINTS, self._dialect("WHERE id = ?"), checkpoint_id)

    async def last_checkpoint(self, run_id: str) -> CheckpointRecord | None:
        where = self._dialect("WHERE run_id = ? ORDER BY id DESC LIMIT 1")
        return await self._one(_CHECKPOINTS, where, run_id)

    # dead letters

    async def get_dead_letter(self, dead_letter_id: int) -> DeadLetterRecord | None:
        return await self._one(_DEAD_LETTERS, self._dialect("WHERE id = ?"), dead_letter_id)

    async def list_dead_letters(
        self, *, status: DeadLetterStatus | None = "open"
    ) -> list[DeadLetterRecord]:
        if status is None:
            return await self._all(_DEAD_LETTERS, "ORDER BY id")
        return await self._all(_DEAD_LETTERS, self._dialect("WHERE status = ? ORDER BY id"), status)

    async def dead_letter_for_run(self, run_id: str) -> DeadLetterRecord | None:
        where = self._dialect("WHERE run_id = ? ORDER BY id DESC LIMIT 1")
        return await self._one(_DEAD_LETTERS, where, run_id)

    async def set_dead_letter_status(
        self,
        dead_letter_id: int,
        status: DeadLetterStatus,
        *,
        only_if: DeadLetterStatus | None = None,
    ) -> bool:
        # The status test in the WHERE clause makes check-and-set one statement.
        expected, args = ("", ()) if only_if is None else (" AND status = ?", (only_if,))
        return await self._update(
            self._dialect(
                f"UPDATE dead_letters SET status = ?, updated_at = ? WHERE id = ?{expected}"
            ),
            status,
            self._clock(),
            dead_letter_id,
            *args,
            what=f"set_dead_letter_status {dead_letter_id} to {status!r}",
        )

    # idempotency and artifacts

    async def get_idempotent(self, key: str) -> IdempotencyRecord | None:
        return await self._one(_IDEMPOTENCY, self._dialect("WHERE key = ?"), key)

    async def put_artifact(self, artifact: ArtifactRecord) -> None:
        await self._insert(_ARTIFACTS, artifact, f"put_artifact {artifact.handle!r}")

    async def get_artifact(self, handle: str) -> ArtifactRecord | None:
        return await self._one(_ARTIFACTS, self._dialect("WHERE handle = ?"), handle)

    # agent keys

    async def add_agent_key(self, key: AgentKeyRecord) -> None:
        await self._insert(_AGENT_KEYS, key, f"add_agent_key {key.id!r}")

    async def find_agent_key(self, key_hash: str) -> AgentKeyRecord | None:
        return await self._one(_AGENT_KEYS, self._dialect("WHERE key_hash = ?"), key_hash)

    async def list_agent_keys(self) -> list[AgentKeyRecord]:
        return await self._all(_AGENT_KEYS, "ORDER BY created_at, rowid")

    async def revoke_agent_key(self, key_id: str, at: float) -> bool:
        return await self._update(
            self._dialect(
                "UPDATE agent_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
            ),
            at,
            key_id,
            what=f"revoke_agent_key {key_id!r}",
        )

    # audit

    async def list_audit(self) -> list[AuditEntry]:
        return await self._all(_AUDIT, "ORDER BY pos")

    # observability

    async def runs_between(self, since: float, until: float) -> list[RunRecord]:
        _window(since, until, "runs_between")
        return await self._all(
            _RUNS,
            self._dialect("WHERE created_at >= ? AND created_at < ? ORDER BY created_at, rowid"),
            since,
            until,
        )


class Approvals(Statements):
    """Mixed into both stores' approvals: every decision is one UPDATE whose WHERE clause
    holds the state it expects (see sqlite_approvals and postgres_approvals for why that
    makes a check and its write one atomic step in each)."""

    async def add_approval(self, approval: ApprovalRecord) -> None:
        await self._insert(_APPROVALS, approval, f"add_approval {approval.id!r}")

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        return await self._one(_APPROVALS, self._dialect("WHERE id = ?"), approval_id)

    async def find_approvals(
        self, *, call_key: str | None = None, request_key: str | None = None
    ) -> list[ApprovalRecord]:
        if (call_key is None) == (request_key is None):
            raise ValueError("find_approvals takes one of call_key and request_key")
        column = "call_key" if call_key is not None else "request_key"
        return await self._all(
            _APPROVALS,
            self._dialect(f"WHERE {column} = ? ORDER BY requested_at DESC, rowid DESC"),
            call_key if call_key is not None else request_key,
        )

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
        if status == "pending":
            raise ValueError(f"decide_approval {approval_id!r}: a decision cannot be 'pending'")
        return await self._update(
            self._dialect(
                "UPDATE approvals SET status = ?, decided_at = ?, decided_by = ?, note = ?,"
                " approved_args = ? WHERE id = ? AND status = 'pending'"
            ),
            status,
            at,
            by,
            note,
            _dump_opt(args),
            approval_id,
            what=f"decide_approval {approval_id!r} as {status!r}",
        )

    async def escalate_approval(
        self, approval_id: str, *, escalations: int, timeout_at: float
    ) -> bool:
        return await self._update(
            self._dialect(
                "UPDATE approvals SET escalations = escalations + 1, timeout_at = ?"
                " WHERE id = ? AND status = 'pending' AND escalations = ?"
            ),
            timeout_at,
            approval_id,
            escalations,
            what=f"escalate_approval {approval_id!r}",
        )

    # shadow proposals

    async def add_proposal(self, proposal: ProposalRecord) -> None:
        await self._insert(_PROPOSALS, proposal, f"add_proposal {proposal.id!r}")

    async def get_proposal(self, proposal_id: str) -> ProposalRecord | None:
        return await self._one(_PROPOSALS, self._dialect("WHERE id = ?"), proposal_id)

    async def review_proposal(
        self, proposal_id: str, verdict: Verdict, *, by: str, at: float, note: str | None = None
    ) -> bool:
        return await self._update(
            self._dialect(
                "UPDATE proposals SET verdict = ?, reviewed_by = ?, reviewed_at = ?, note = ?"
                " WHERE id = ? AND verdict IS NULL"
            ),
            verdict,
            by,
            at,
            note,
            proposal_id,
            what=f"review_proposal {proposal_id!r}",
        )


class Purge:
    """Mixed into both stores: Store.purge. The store gives its conditions (`_deleted`,
    table to condition; `_spent_answers`; both taking the cutoff as their one parameter),
    `_chunk_of` (a statement changing at most a chunk of a table's rows), `_count` and
    `_chunked` (which runs a chunk's statement until it changes nothing)."""

    if TYPE_CHECKING:  # what each store provides
        _deleted: Mapping[str, str]
        _spent_answers: str

        @staticmethod
        def _chunk_of(change: str, table: str, where: str) -> str: ...
        async def _count(self, table: str, where: str, cutoff: float) -> int: ...
        async def _chunked(self, statement: str, cutoff: float, what: str) -> int: ...

    async def purge(
        self,
        *,
        steps_before: float | None,
        artifacts_before: float | None,
        dead_letters_before: float | None,
        answers_before: float | None = None,
        dry_run: bool,
    ) -> dict[str, int]:
        cutoffs = {
            "steps": steps_before,
            "checkpoints": steps_before,
            "idempotency": steps_before,
            "artifacts": artifacts_before,
            "dead_letters": dead_letters_before,
        }
        counts: dict[str, int] = {}
        for table, cutoff in cutoffs.items():
            counts[table] = await self._purge_rows(
                table, f"DELETE FROM {table}", self._deleted[table], cutoff, dry_run
            )
        counts["approval_answers"] = await self._purge_rows(
            "approvals",
            "UPDATE approvals SET answer = NULL",
            self._spent_answers,
            answers_before,
            dry_run,
            "purge approval answers",
        )
        if not dry_run and any(counts.values()):
            await self._purged()
        return counts

    async def _purge_rows(
        self,
        table: str,
        change: str,
        where: str,
        cutoff: float | None,
        dry_run: bool,
        what: str | None = None,
    ) -> int:
        if cutoff is None:
            return 0
        if dry_run:
            return await self._count(table, where, cutoff)
        statement = self._chunk_of(change, table, where)
        return await self._chunked(statement, cutoff, what or f"purge {table}")

    async def _purged(self) -> None:
        """After a purge that removed something (a store's clean-up: none by default)."""
