"""The SQLite store's retention purge (a part of SQLiteStore): see Store.purge.

Rows go in chunks of CHUNK, each its own transaction, so a purge of months of steps never
holds the write lock for long: the gateway's step writes, queued on the same worker
thread, and other processes' writers get their turn between chunks. A chunk re-reads its
condition, so a run that starts running again (a dead letter retried) meanwhile keeps the
rest of its rows.

What is deleted is meant to be gone from the file: each chunk runs with
`secure_delete` on (freed space is overwritten with zeros), and the purge ends with a
checkpoint that truncates the WAL, whose frames would otherwise still hold the old pages.
The audit log is never touched: a purge only appends its own entry (the caller's), so the
chain verifies as before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from corral.state.store_common import Purge

T = TypeVar("T")

# Rows per transaction: small enough that a chunk takes milliseconds, large enough that
# the per-transaction cost does not dominate.
CHUNK = 2000

# Runs whose records stay whatever their age: still running, or halted with an open dead
# letter (a retry resumes them: their checkpoints, idempotent results and artifacts are
# used again, and their steps are what the packet's reader looks at).
_KEPT_RUNS = (
    "SELECT id FROM runs WHERE status = 'running'"
    " UNION SELECT run_id FROM dead_letters WHERE status = 'open'"
)
# table: (condition on its rows, given the cutoff as ?1)
_DELETED: dict[str, str] = {
    "steps": f"started_at < ?1 AND run_id NOT IN ({_KEPT_RUNS})",
    "checkpoints": f"created_at < ?1 AND run_id NOT IN ({_KEPT_RUNS})",
    "idempotency": f"created_at < ?1 AND run_id NOT IN ({_KEPT_RUNS})",
    "artifacts": f"created_at < ?1 AND run_id NOT IN ({_KEPT_RUNS})",
    "dead_letters": "updated_at < ?1 AND status IN ('retried', 'dropped')",
}
# The held answers of requests none of whose approvals (of any answer held for the same
# request) is pending or was decided at or after the cutoff.
_SPENT_ANSWERS = (
    "answer IS NOT NULL AND status != 'pending' AND decided_at < ?1 AND NOT EXISTS"
    " (SELECT 1 FROM approvals other WHERE other.request_key = approvals.request_key"
    " AND (other.status = 'pending' OR other.decided_at >= ?1))"
)


class SQLiteRetention(Purge):
    """Mixed into SQLiteStore, whose statement runner it uses: the SQL of Store.purge
    (store_common.Purge)."""

    if TYPE_CHECKING:  # the helper SQLiteStore provides

        async def _run(self, op: Callable[[sqlite3.Connection], T], what: str = "") -> T: ...

    _deleted = _DELETED
    _spent_answers = _SPENT_ANSWERS

    @staticmethod
    def _chunk_of(change: str, table: str, where: str) -> str:
        return f"{change} WHERE rowid IN (SELECT rowid FROM {table} WHERE {where} LIMIT {CHUNK})"

    async def _purged(self) -> None:
        await self._run(_truncate_wal, "purge: checkpoint the WAL")

    async def _count(self, table: str, where: str, cutoff: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            found: int = conn.execute(
                f"SELECT COUNT(*) FROM {table} WHERE {where}", (cutoff,)
            ).fetchone()[0]
            return found

        return await self._run(op)

    async def _chunked(self, statement: str, cutoff: float, what: str) -> int:
        """Run `statement` (which touches at most CHUNK rows) until it touches none."""

        def op(conn: sqlite3.Connection) -> int:
            was = conn.execute("PRAGMA secure_delete").fetchone()[0]
            conn.execute("PRAGMA secure_delete = ON")
            try:
                return conn.execute(statement, (cutoff,)).rowcount
            finally:
                conn.execute(f"PRAGMA secure_delete = {int(was)}")

        total = 0
        while changed := await self._run(op, what):
            total += changed
        return total


def _truncate_wal(conn: sqlite3.Connection) -> None:
    # Busy (a reader in another process holds an old snapshot) is not an error: the WAL
    # is reset by a later checkpoint and its old frames overwritten as it is reused.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
