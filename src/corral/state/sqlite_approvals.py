"""The SQLite store's approvals and shadow proposals (a part of SQLiteStore).

Every decision is one UPDATE whose WHERE clause holds the state it expects, so a
check and its write are one atomic step: of two reviewers (or a reviewer and a
timeout) racing on one approval, exactly one changes it.
"""

from __future__ import annotations

from collections.abc import Collection

import orjson

from corral.state.records import ApprovalRecord, ApprovalStatus, ProposalRecord
from corral.state.sqlite_tables import _APPROVALS, _PROPOSALS
from corral.state.store_common import Approvals


class SQLiteApprovals(Approvals):
    """Mixed into SQLiteStore, whose statement helpers it uses: the reads whose SQL is
    SQLite's own; the rest is store_common.Approvals."""

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

    async def approvals_by_id(self, ids: Collection[str]) -> list[ApprovalRecord]:
        if not ids:
            return []
        return await self._all(
            _APPROVALS, "WHERE id IN (SELECT value FROM json_each(?))", orjson.dumps(list(ids))
        )

    # shadow proposals

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
