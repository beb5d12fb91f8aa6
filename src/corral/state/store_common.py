"""What SQLiteStore and PostgresStore share above their SQL: mixins whose methods are the
same in both stores, each leaving to the store what differs (its statements and how it
runs them: SQLite's worker thread, psycopg's pool).

- StepQueue: record_step, queue_step and begin_call, which turn a step or a write-ahead
  record into a StepWrite (sqlite_steps) for the store's group commit (`_enqueue`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from corral.state.records import (
    ApprovalRecord,
    ApprovalStatus,
    AuditEntry,
    InflightRecord,
    Json,
    ProposalRecord,
    RunRecord,
    StepRecord,
    Verdict,
)
from corral.state.sqlite_steps import StepWrite
from corral.state.sqlite_tables import (
    _APPROVALS,
    _INFLIGHT,
    _PROPOSALS,
    _STEPS,
    _TOTALS,
    _dump_opt,
    _Table,
)
from corral.state.store import ConstraintError

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

        @staticmethod
        def _dialect(sql: str) -> str: ...
        async def _one(self, table: _Table[R], where: str, *args: Any) -> R | None: ...
        async def _all(self, table: _Table[R], where: str, *args: Any) -> list[R]: ...
        async def _insert(self, table: _Table[R], record: R, what: str) -> None: ...
        async def _update(self, sql: str, *args: Any, what: str = "") -> bool: ...


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
