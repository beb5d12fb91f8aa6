"""The SQLite store's approvals and shadow proposals (a part of SQLiteStore).

Every decision is one UPDATE whose WHERE clause holds the state it expects, so a
check and its write are one atomic step: of two reviewers (or a reviewer and a
timeout) racing on one approval, exactly one changes it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from corral.state.records import (
    ApprovalRecord,
    ApprovalStatus,
    Json,
    ProposalRecord,
    Verdict,
)
from corral.state.sqlite_tables import _APPROVALS, _PROPOSALS, _Table

R = TypeVar("R")
T = TypeVar("T")


class SQLiteApprovals:
    """Mixed into SQLiteStore, whose statement helpers it uses."""

    if TYPE_CHECKING:  # the helpers SQLiteStore provides

        async def _run(self, op: Callable[[sqlite3.Connection], T], what: str = "") -> T: ...
        async def _one(self, table: _Table[R], where: str, *params: Any) -> R | None: ...
        async def _all(self, table: _Table[R], where: str, *params: Any) -> list[R]: ...
        async def _insert(self, table: _Table[R], record: R, what: str) -> None: ...
        async def _update(self, sql: str, *params: Any, what: str = "") -> bool: ...

    async def add_approval(self, approval: ApprovalRecord) -> None:
        await self._insert(_APPROVALS, approval, f"add_approval {approval.id!r}")

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        return await self._one(_APPROVALS, "WHERE id = ?", approval_id)

    async def list_approvals(
        self, *, status: ApprovalStatus | None = None, run_id: str | None = None
    ) -> list[ApprovalRecord]:
        return await self._all(
            _APPROVALS,
            "WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR run_id = ?2)"
            " ORDER BY requested_at, rowid",
            status,
            run_id,
        )

    async def find_approvals(
        self, *, call_key: str | None = None, request_key: str | None = None
    ) -> list[ApprovalRecord]:
        if (call_key is None) == (request_key is None):
            raise ValueError("find_approvals takes one of call_key and request_key")
        column = "call_key" if call_key is not None else "request_key"
        return await self._all(
            _APPROVALS,
            f"WHERE {column} = ? ORDER BY requested_at DESC, rowid DESC",
            call_key if call_key is not None else request_key,
        )

    async def approvals_by_id(self, ids: Collection[str]) -> list[ApprovalRecord]:
        if not ids:
            return []
        return await self._all(
            _APPROVALS, "WHERE id IN (SELECT value FROM json_each(?))", orjson.dumps(list(ids))
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
        edited = None if args is None else orjson.dumps(args).decode()
        return await self._update(
            "UPDATE approvals SET status = ?, decided_at = ?, decided_by = ?, note = ?,"
            " approved_args = ? WHERE id = ? AND status = 'pending'",
            status,
            at,
            by,
            note,
            edited,
            approval_id,
            what=f"decide_approval {approval_id!r} as {status!r}",
        )

    async def escalate_approval(
        self, approval_id: str, *, escalations: int, timeout_at: float
    ) -> bool:
        return await self._update(
            "UPDATE approvals SET escalations = escalations + 1, timeout_at = ?"
            " WHERE id = ? AND status = 'pending' AND escalations = ?",
            timeout_at,
            approval_id,
            escalations,
            what=f"escalate_approval {approval_id!r}",
        )

    # shadow proposals

    async def add_proposal(self, proposal: ProposalRecord) -> None:
        await self._insert(_PROPOSALS, proposal, f"add_proposal {proposal.id!r}")

    async def get_proposal(self, proposal_id: str) -> ProposalRecord | None:
        return await self._one(_PROPOSALS, "WHERE id = ?", proposal_id)

    async def list_proposals(
        self, *, agent: str | None = None, tool: str | None = None
    ) -> list[ProposalRecord]:
        return await self._all(
            _PROPOSALS,
            "WHERE (?1 IS NULL OR agent = ?1) AND (?2 IS NULL OR tool = ?2)"
            " ORDER BY proposed_at, rowid",
            agent,
            tool,
        )

    async def review_proposal(
        self, proposal_id: str, verdict: Verdict, *, by: str, at: float, note: str | None = None
    ) -> bool:
        return await self._update(
            "UPDATE proposals SET verdict = ?, reviewed_by = ?, reviewed_at = ?, note = ?"
            " WHERE id = ? AND verdict IS NULL",
            verdict,
            by,
            at,
            note,
            proposal_id,
            what=f"review_proposal {proposal_id!r}",
        )
