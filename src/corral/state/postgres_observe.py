"""The PostgreSQL store's sums and sweeps (a part of PostgresStore): spending, the reads of
`corral graph` and `corral report`, and the retention purge.

Each read is one statement. step_stats ranks durations with percentile_disc, which takes
the value at row ceil(fraction * n) of the ordered group: the nearest rank that
store.nearest_rank and SQLite's window function take, so both stores report the same
figure. Text is ordered by COLLATE "C" (bytewise, as SQLite orders), whatever the
database's collation.

The purge deletes in chunks of CHUNK rows, each its own transaction that re-reads its
condition (the conditions are SQLite's, sqlite_retention), so a purge of months of steps
never holds its locks for long. PostgreSQL keeps deleted rows' space until autovacuum
reclaims it; the audit log is never touched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any, TypeVar

from psycopg import AsyncConnection

from corral.state.records import Spending
from corral.state.sqlite_observe import _FAILED, _HOP, _group_column, _window
from corral.state.sqlite_retention import _DELETED, _SPENT_ANSWERS
from corral.state.sqlite_tables import _COUNTED, _Table
from corral.state.store import STEP_PERCENTILE, RunOrigin, StatsGroup, StepStats
from corral.state.store_common import Purge

R = TypeVar("R")
T = TypeVar("T")
Conn = AsyncConnection[tuple[Any, ...]]

# Rows per transaction, as in sqlite_retention.
CHUNK = 2000

# The conditions of sqlite_retention, given the cutoff as a named parameter.
_PG_DELETED = {table: where.replace("?1", "%(cutoff)s") for table, where in _DELETED.items()}
_PG_SPENT_ANSWERS = _SPENT_ANSWERS.replace("?1", "%(cutoff)s")

_STEP_STATS = f"""
SELECT * FROM (
SELECT {{group}} AS grp, s.kind AS kind, {_HOP} AS hop, COUNT(*) AS calls,
       COUNT(*) FILTER (WHERE s.status IN ({_FAILED})) AS errors,
       COALESCE(SUM(s.cost_usd), 0.0) AS cost_usd,
       percentile_disc(%(fraction)s) WITHIN GROUP (ORDER BY s.ended_at - s.started_at)
FROM steps s JOIN runs r ON r.id = s.run_id
WHERE s.started_at >= %(since)s AND s.started_at < %(until)s
GROUP BY 1, 2, 3
) stats
ORDER BY grp COLLATE "C", kind COLLATE "C", hop COLLATE "C"
"""

# A session's opener is the agent of its first run, over all its runs (runs_by_session).
_RUN_ORIGINS = """
SELECT r.id,
       (SELECT p.agent FROM runs p WHERE p.id = r.parent_run_id),
       (SELECT f.agent FROM runs f WHERE f.session = r.session
        ORDER BY f.created_at, f.rowid LIMIT 1)
FROM runs r
WHERE r.created_at >= %s AND r.created_at < %s
  AND (r.parent_run_id IS NOT NULL OR r.session IS NOT NULL)
ORDER BY r.created_at, r.rowid
"""


class PostgresObserve(Purge):
    """Mixed into PostgresStore, whose statement helpers it uses."""

    if TYPE_CHECKING:  # the helpers PostgresStore provides

        async def _read(self, op: Callable[[Conn], Awaitable[T]], what: str = "") -> T: ...
        async def _write(self, op: Callable[[Conn], Awaitable[T]], what: str = "") -> T: ...
        async def _all(self, table: _Table[R], where: str, *args: Any) -> list[R]: ...

    async def spending(
        self,
        *,
        session: str | None = None,
        agents: Collection[str] | None = None,
        agent_type: str | None = None,
        since: float | None = None,
    ) -> Spending:
        where: list[str] = []
        args: list[Any] = []
        if since is None:  # whole runs: their running totals
            select = (
                "SELECT SUM(cost_usd), SUM(input_tokens + output_tokens)::bigint,"
                " SUM(steps)::bigint, SUM(tool_calls)::bigint FROM runs"
            )
            column = ""
        else:  # the steps of a window
            select = (
                "SELECT SUM(s.cost_usd), SUM(s.input_tokens + s.output_tokens)::bigint,"
                f" COUNT(*) FILTER (WHERE {_COUNTED}),"
                f" COUNT(*) FILTER (WHERE s.kind = 'tool' AND {_COUNTED})"
                " FROM steps s JOIN runs r ON r.id = s.run_id"
            )
            column = "r."
            where.append("s.started_at >= %s")
            args.append(since)
        if session is not None:
            where.append(f"{column}session = %s")
            args.append(session)
        if agents is not None:
            where.append(f"{column}agent = ANY(%s)")
            args.append(list(agents))
        if agent_type is not None:
            where.append(f"{column}agent_type = %s")
            args.append(agent_type)
        sql = select + (f" WHERE {' AND '.join(where)}" if where else "")

        async def op(conn: Conn) -> Spending:
            row = await (await conn.execute(sql, args)).fetchone()
            assert row is not None  # an aggregate always has a row
            usd, tokens, steps, tool_calls = row
            return Spending(usd or 0.0, tokens or 0, steps or 0, tool_calls or 0)

        return await self._read(op, "spending")

    # observability

    async def run_origins(self, since: float, until: float) -> list[RunOrigin]:
        _window(since, until, "run_origins")

        async def op(conn: Conn) -> list[RunOrigin]:
            rows = await (await conn.execute(_RUN_ORIGINS, (since, until))).fetchall()
            return [RunOrigin(run_id, parent, opener) for run_id, parent, opener in rows]

        return await self._read(op, "run_origins")

    async def step_stats(
        self, since: float, until: float, *, by: StatsGroup = "agent"
    ) -> list[StepStats]:
        _window(since, until, "step_stats")
        sql = _STEP_STATS.format(group=_group_column(by))
        args = {"since": since, "until": until, "fraction": STEP_PERCENTILE / 100}

        async def op(conn: Conn) -> list[StepStats]:
            rows = await (await conn.execute(sql, args)).fetchall()
            return [
                StepStats(group, kind, hop, calls, errors, cost, p95)
                for group, kind, hop, calls, errors, cost, p95 in rows
            ]

        return await self._read(op, "step_stats")

    # retention (the rest of it is store_common.Purge)

    _deleted = _PG_DELETED
    _spent_answers = _PG_SPENT_ANSWERS

    @staticmethod
    def _chunk_of(change: str, table: str, where: str) -> str:
        return (
            f"{change} WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM {table} WHERE {where} LIMIT {CHUNK} FOR UPDATE))"
        )

    async def _count(self, table: str, where: str, cutoff: float) -> int:
        async def op(conn: Conn) -> int:
            cur = await conn.execute(
                f"SELECT COUNT(*) FROM {table} WHERE {where}", {"cutoff": cutoff}
            )
            row = await cur.fetchone()
            assert row is not None  # an aggregate always has a row
            found: int = row[0]
            return found

        return await self._read(op, f"purge: count {table}")

    async def _chunked(self, statement: str, cutoff: float, what: str) -> int:
        """Run `statement` (which touches at most CHUNK rows) until it touches none."""

        async def op(conn: Conn) -> int:
            return (await conn.execute(statement, {"cutoff": cutoff})).rowcount

        total = 0
        while changed := await self._write(op, what):
            total += changed
        return total
