"""The SQLite store's reads for `corral graph` and `corral report` (a part of SQLiteStore).

Each is one statement. SQLite has no percentile function, so step_stats sums in SQL with
GROUP BY and ranks the durations of each group with a window function, returning only
the one duration at the percentile's rank: a day of steps never crosses to Python.
The windows use the indexes of steps by started_at and of runs by created_at and by
session.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from corral.state.sqlite_tables import _Table
from corral.state.store import (
    FAILED_STEP_STATUSES,
    STEP_PERCENTILE,
    RunOrigin,
    StatsGroup,
    StepStats,
)

R = TypeVar("R")
T = TypeVar("T")

_GROUP_COLUMNS: dict[str, str] = {"agent": "r.agent", "agent_type": "r.agent_type"}
_FAILED = ", ".join(f"'{status}'" for status in FAILED_STEP_STATUSES)

# The hop a step is: the model an llm step used (its name if none was recorded), the tool.
_HOP = "CASE WHEN s.kind = 'llm' THEN COALESCE(NULLIF(s.model_used, ''), s.name) ELSE s.name END"

# ?1 since, ?2 until, ?3 the percentile; {group} is one of _GROUP_COLUMNS. The percentile
# by nearest rank is the duration ranked ceil(n * pct / 100) (integer arithmetic below).
_STEP_STATS = f"""
WITH windowed AS (
    SELECT {{group}} AS grp, s.kind AS kind, {_HOP} AS hop, s.status AS status,
           s.cost_usd AS cost_usd, s.ended_at - s.started_at AS duration
    FROM steps s JOIN runs r ON r.id = s.run_id
    WHERE s.started_at >= ?1 AND s.started_at < ?2
),
sums AS (
    SELECT grp, kind, hop, COUNT(*) AS calls, SUM(status IN ({_FAILED})) AS errors,
           TOTAL(cost_usd) AS cost_usd
    FROM windowed GROUP BY grp, kind, hop
),
ranked AS (
    SELECT grp, kind, hop, duration,
           ROW_NUMBER() OVER (PARTITION BY grp, kind, hop ORDER BY duration) AS position,
           COUNT(*) OVER (PARTITION BY grp, kind, hop) AS n
    FROM windowed
)
SELECT sums.grp, sums.kind, sums.hop, sums.calls, sums.errors, sums.cost_usd, ranked.duration
FROM sums JOIN ranked USING (grp, kind, hop)
WHERE ranked.position = MAX(1, (?3 * ranked.n + 99) / 100)
ORDER BY sums.grp, sums.kind, sums.hop
"""

# A session's opener is the agent of its first run, over all its runs (runs_by_session).
_RUN_ORIGINS = """
SELECT r.id,
       (SELECT p.agent FROM runs p WHERE p.id = r.parent_run_id),
       (SELECT f.agent FROM runs f WHERE f.session = r.session
        ORDER BY f.created_at, f.rowid LIMIT 1)
FROM runs r
WHERE r.created_at >= ? AND r.created_at < ?
  AND (r.parent_run_id IS NOT NULL OR r.session IS NOT NULL)
ORDER BY r.created_at, r.rowid
"""


def _window(since: float, until: float, what: str) -> None:
    if not since <= until:
        raise ValueError(f"{what}: the window must not end before it starts ({since} > {until})")


def _group_column(by: str) -> str:
    """The column step_stats groups by, for its `by`."""
    if by not in _GROUP_COLUMNS:
        raise ValueError(f"step_stats: by must be one of {', '.join(_GROUP_COLUMNS)}, not {by!r}")
    return _GROUP_COLUMNS[by]


class SQLiteObserve:
    """Mixed into SQLiteStore, whose statement helpers it uses."""

    if TYPE_CHECKING:  # the helpers SQLiteStore provides

        async def _run(self, op: Callable[[sqlite3.Connection], T], what: str = "") -> T: ...
        async def _all(self, table: _Table[R], where: str, *params: Any) -> list[R]: ...

    async def run_origins(self, since: float, until: float) -> list[RunOrigin]:
        _window(since, until, "run_origins")

        def op(conn: sqlite3.Connection) -> list[RunOrigin]:
            rows = conn.execute(_RUN_ORIGINS, (since, until))
            return [RunOrigin(run_id, parent, opener) for run_id, parent, opener in rows]

        return await self._run(op)

    async def step_stats(
        self, since: float, until: float, *, by: StatsGroup = "agent"
    ) -> list[StepStats]:
        _window(since, until, "step_stats")
        sql = _STEP_STATS.format(group=_group_column(by))

        def op(conn: sqlite3.Connection) -> list[StepStats]:
            return [
                StepStats(group, kind, hop, calls, errors, cost, p95)
                for group, kind, hop, calls, errors, cost, p95 in conn.execute(
                    sql, (since, until, STEP_PERCENTILE)
                )
            ]

        return await self._run(op)
