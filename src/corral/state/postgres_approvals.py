"""The PostgreSQL store's approvals and shadow proposals (a part of PostgresStore).

Every decision is one UPDATE whose WHERE clause holds the state it expects. Under READ
COMMITTED a second UPDATE of the same row, from any connection of any node, waits for
the first to commit and then re-checks that clause on the row as the first left it: of
two reviewers (or a reviewer and a timeout) racing on one approval, exactly one changes it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from corral.state.records import ApprovalRecord, ApprovalStatus, ProposalRecord
from corral.state.sqlite_tables import _APPROVALS, _PROPOSALS
from corral.state.store_common import Approvals


def _filters(**values: str | None) -> tuple[str, list[Any]]:
    """WHERE clause (or "") and its arguments for the columns given a value."""
    given = {column: value for column, value in values.items() if value is not None}
    where = " AND ".join(f"{column} = %s" for column in given)
    return (f"WHERE {where} " if where else ""), list(given.values())


class PostgresApprovals(Approvals):
    """Mixed into PostgresStore, whose statement helpers it uses: the reads whose SQL is
    PostgreSQL's own; the rest is store_common.Approvals."""

    async def list_approvals(
        self, *, status: ApprovalStatus | None = None, run_id: str | None = None
    ) -> list[ApprovalRecord]:
        where, args = _filters(status=status, run_id=run_id)
        return await self._all(_APPROVALS, f"{where}ORDER BY requested_at, rowid", *args)

    async def approvals_by_id(self, ids: Collection[str]) -> list[ApprovalRecord]:
        if not ids:
            return []
        return await self._all(_APPROVALS, "WHERE id = ANY(%s) ORDER BY rowid", list(ids))

    # shadow proposals

    async def list_proposals(
        self, *, agent: str | None = None, tool: str | None = None
    ) -> list[ProposalRecord]:
        where, args = _filters(agent=agent, tool=tool)
        return await self._all(_PROPOSALS, f"{where}ORDER BY proposed_at, rowid", *args)
