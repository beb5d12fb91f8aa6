"""The PostgreSQL store's approvals and shadow proposals (a part of PostgresStore).

Every decision is one UPDATE whose WHERE clause holds the state it expects. Under READ
COMMITTED a second UPDATE of the same row, from any connection of any node, waits for
the first to commit and then re-checks that clause on the row as the first left it: of
two reviewers (or a reviewer and a timeout) racing on one approval, exactly one changes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any, TypeVar

from psycopg import AsyncConnection

from corral.state.records import ApprovalRecord, ApprovalStatus, Json, ProposalRecord, Verdict
from corral.state.sqlite_tables import _APPROVALS, _PROPOSALS, _dump_opt, _Table

R = TypeVar("R")
T = TypeVar("T")


def _filters(**values: str | None) -> tuple[str, list[Any]]:
    """WHERE clause (or "") and its arguments for the columns given a value."""
    given = {column: value for column, value in values.items() if value is not None}
    where = " AND ".join(f"{column} = %s" for column in given)
    return (f"WHERE {where} " if where else ""), list(given.values())


class PostgresApprovals:
    """Mixed into PostgresStore, whose statement helpers it uses."""

    if TYPE_CHECKING:  # the helpers PostgresStore provides

        async def _read(
            self, op: Callable[[AsyncConnection[tuple[Any, ...]]], Awaitable[T]], what: str = ""
        ) -> T: ...
        async def _one(self, table: _Table[R], where: str, *args: Any) -> R | None: ...
        async def _all(self, table: _Table[R], where: str, *args: Any) -> list[R]: ...
        async def _insert(self, table: _Table[R], record: R, what: str) -> None: ...
        async def _update(self, sql: str, *args: Any, what: str = "") -> bool: ...

    async def add_approval(self, approval: ApprovalRecord) -> None:
        await self._insert(_APPROVALS, approval, f"add_approval {approval.id!r}")

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        return await self._one(_APPROVALS, "WHERE id = %s", approval_id)

    async def list_approvals(
        self, *, status: ApprovalStatus | None = None, run_id: str | None = None
    ) -> list[ApprovalRecord]:
        where, args = _filters(status=status, run_id=run_id)
        return await self._all(_APPROVALS, f"{where}ORDER BY requested_at, rowid", *args)

    async def find_approvals(
        self, *, call_key: str | None = None, request_key: str | None = None
    ) -> list[ApprovalRecord]:
        if (call_key is None) == (request_key is None):
            raise ValueError("find_approvals takes one of call_key and request_key")
        where, args = _filters(call_key=call_key, request_key=request_key)
        return await self._all(_APPROVALS, f"{where}ORDER BY requested_at DESC, rowid DESC", *args)

    async def approvals_by_id(self, ids: Collection[str]) -> list[ApprovalRecord]:
        if not ids:
            return []
        return await self._all(_APPROVALS, "WHERE id = ANY(%s) ORDER BY rowid", list(ids))

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
            "UPDATE approvals SET status = %s, decided_at = %s, decided_by = %s, note = %s,"
            " approved_args = %s WHERE id = %s AND status = 'pending'",
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
            "UPDATE approvals SET escalations = escalations + 1, timeout_at = %s"
            " WHERE id = %s AND status = 'pending' AND escalations = %s",
            timeout_at,
            approval_id,
            escalations,
            what=f"escalate_approval {approval_id!r}",
        )

    # shadow proposals

    async def add_proposal(self, proposal: ProposalRecord) -> None:
        await self._insert(_PROPOSALS, proposal, f"add_proposal {proposal.id!r}")

    async def get_proposal(self, proposal_id: str) -> ProposalRecord | None:
        return await self._one(_PROPOSALS, "WHERE id = %s", proposal_id)

    async def list_proposals(
        self, *, agent: str | None = None, tool: str | None = None
    ) -> list[ProposalRecord]:
        where, args = _filters(agent=agent, tool=tool)
        return await self._all(_PROPOSALS, f"{where}ORDER BY proposed_at, rowid", *args)

    async def review_proposal(
        self, proposal_id: str, verdict: Verdict, *, by: str, at: float, note: str | None = None
    ) -> bool:
        return await self._update(
            "UPDATE proposals SET verdict = %s, reviewed_by = %s, reviewed_at = %s, note = %s"
            " WHERE id = %s AND verdict IS NULL",
            verdict,
            by,
            at,
            note,
            proposal_id,
            what=f"review_proposal {proposal_id!r}",
        )
