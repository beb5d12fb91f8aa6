"""SQLiteStore: the Store in one SQLite file, shared by the processes of one machine.

All SQLite work runs on one dedicated worker thread that owns the connection: the
event loop never blocks on disk, and since SQLite admits one writer at a time a
second thread would only queue behind the first. WAL lets readers in other
processes (the CLI, the dashboard) proceed during a write; synchronous=NORMAL in
WAL mode keeps every commit across a process crash and gives up only the last
commits on power loss, in exchange for no fsync per commit.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from corral.state.records import (
    AuditEntry,
    CheckpointRecord,
    DeadLetterRecord,
    IdempotencyRecord,
    Json,
    LeaseRecord,
    RunRecord,
    Spending,
    StepRecord,
)
from corral.state.sqlite_approvals import SQLiteApprovals
from corral.state.sqlite_observe import SQLiteObserve
from corral.state.sqlite_retention import SQLiteRetention
from corral.state.sqlite_schema import migrate, transaction
from corral.state.sqlite_steps import StepWrite, append_audit, settle, write_batch, write_step
from corral.state.sqlite_tables import (
    _COUNTED,
    _IDEMPOTENCY,
    _KILL_REQUESTS,
    _LEASES,
    _OWNER_GONE,
    _RUNS,
    _SAVE_RUN,
    _STEPS,
    _dump,
    _Table,
)
from corral.state.store import (
    ConstraintError,
    NotFoundError,
    Store,
    StoreError,
    add_topup,
)
from corral.state.store_common import (
    REOPEN_FIND,
    REOPEN_RUN,
    RETRY_DEAD_LETTERS,
    Records,
    StepQueue,
    halted_reason,
    reopened_topup,
)

T = TypeVar("T")
R = TypeVar("R")


def _run_params(run: RunRecord) -> dict[str, Any]:
    """The named parameters of _SAVE_RUN, encoded outside the worker thread."""
    return dict(zip(_RUNS.columns, _RUNS.to_row(run), strict=True))


def _save_run(conn: sqlite3.Connection, params: Mapping[str, Any], what: str) -> None:
    if conn.execute(_SAVE_RUN, params).rowcount == 0:
        raise NotFoundError(f"{what}: no run {params['id']!r}")


def _insert_dead_letter(
    conn: sqlite3.Connection, run_id: str, reason: str, packet: str, now: float
) -> int:
    dead_letter_id = conn.execute(
        "INSERT INTO dead_letters (run_id, reason, packet, status, created_at, updated_at)"
        " VALUES (?, ?, ?, 'open', ?, ?)",
        (run_id, reason, packet, now, now),
    ).lastrowid
    assert dead_letter_id is not None  # set by every successful INSERT
    return dead_letter_id


def _enable_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    # Switching a new file to WAL takes an exclusive lock that SQLite does not wait
    # for with the busy handler, so processes opening a new file at once retry here.
    # Once the file is in WAL mode (it stays so) the pragma is a no-op.
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def _connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    # isolation_level=None leaves transactions to us (explicit BEGIN/COMMIT); the
    # timeout is SQLite's busy_timeout, how long a writer waits for another process.
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        _enable_wal(conn, busy_timeout)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"cannot open {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _guarded(op: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection, what: str) -> T:
    try:
        return op(conn)
    except sqlite3.IntegrityError as exc:
        raise ConstraintError(f"{what}: {exc}") from exc


class SQLiteStore(StepQueue, Records, SQLiteApprovals, SQLiteRetention, SQLiteObserve, Store):
    """A Store in one SQLite file (or ":memory:").

    Construction opens and migrates the file and waits for it: do it at startup,
    not per request.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = os.fspath(path)
        self._clock = clock
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-sqlite")
        # Steps waiting for their batch's turn on the worker (see record_step).
        self._steps_lock = threading.Lock()
        self._open_steps: list[StepWrite] | None = None
        try:
            # Created on the worker thread: sqlite3 checks that only it ever uses it.
            self._conn: sqlite3.Connection | None = self._executor.submit(
                _connect, self.path, busy_timeout
            ).result()
        except BaseException:
            self._executor.shutdown()
            raise

    @staticmethod
    def _dialect(sql: str) -> str:
        return sql  # the shared statements are written in SQLite's placeholders

    async def _run(self, op: Callable[[sqlite3.Connection], T], what: str = "") -> T:
        if self._conn is None:
            raise StoreError(f"store {self.path} is closed")
        # Steps recorded after this op must be written after it: they start a new batch.
        with self._steps_lock:
            self._open_steps = None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _guarded, op, self._conn, what)

    async def _one(self, table: _Table[R], where: str, *params: Any) -> R | None:
        def op(conn: sqlite3.Connection) -> R | None:
            row = conn.execute(f"{table.select} {where}", params).fetchone()
            return None if row is None else table.from_row(row)

        return await self._run(op)

    async def _all(self, table: _Table[R], where: str, *params: Any) -> list[R]:
        def op(conn: sqlite3.Connection) -> list[R]:
            return [table.from_row(row) for row in conn.execute(f"{table.select} {where}", params)]

        return await self._run(op)

    # _insert and _update run one statement, which SQLite's implicit transaction makes
    # atomic; writes of several statements use _transaction.

    async def _insert(self, table: _Table[R], record: R, what: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(table.insert, table.to_row(record))

        await self._run(op, what)

    async def _update(self, sql: str, *params: Any, what: str = "") -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            return conn.execute(sql, params).rowcount > 0

        return await self._run(op, what)

    # runs

    async def save_run(self, run: RunRecord) -> None:
        row = _run_params(run)

        def op(conn: sqlite3.Connection) -> None:
            _save_run(conn, row, "save_run")

        await self._run(op, f"save_run {run.id!r}")

    async def kill_requests(self) -> dict[str, float]:
        def op(conn: sqlite3.Connection) -> dict[str, float]:
            return dict(conn.execute(_KILL_REQUESTS).fetchall())

        return await self._run(op)

    async def halt_run(self, run: RunRecord, packet: Json) -> DeadLetterRecord:
        reason = halted_reason(run)
        row = _run_params(run)
        encoded = _dump(packet)

        def op(conn: sqlite3.Connection) -> DeadLetterRecord:
            now = self._clock()
            with transaction(conn):
                _save_run(conn, row, "halt_run")
                dead_letter_id = _insert_dead_letter(conn, run.id, reason, encoded, now)
            return DeadLetterRecord(dead_letter_id, run.id, reason, packet, "open", now, now)

        return await self._run(op, f"halt_run {run.id!r}")

    async def reopen_run(self, run_id: str, *, topup: Mapping[str, float], at: float) -> RunRecord:
        add_topup(None, topup)  # refuse a bad top-up before touching the database

        def op(conn: sqlite3.Connection) -> RunRecord:
            with transaction(conn):
                found = conn.execute(REOPEN_FIND, (run_id,)).fetchone()
                total = reopened_topup(run_id, found, topup)
                conn.execute(REOPEN_RUN, (at, total, run_id))
                conn.execute(RETRY_DEAD_LETTERS, (at, run_id))
                row = conn.execute(f"{_RUNS.select} WHERE id = ?", (run_id,)).fetchone()
            return _RUNS.from_row(row)

        return await self._run(op, f"reopen_run {run_id!r}")

    async def claim_run(
        self, run_id: str, owner: str, *, dead: Collection[str], unowned: bool = True
    ) -> RunRecord | None:
        free = f"owner = ? OR {_OWNER_GONE}" + (" OR owner IS NULL" if unowned else "")
        params = (owner, run_id, owner, _dump(list(dead)))

        def op(conn: sqlite3.Connection) -> RunRecord | None:
            with transaction(conn):
                claimed = conn.execute(
                    f"UPDATE runs SET owner = ? WHERE id = ? AND status = 'running' AND ({free})",
                    params,
                ).rowcount
                if not claimed:
                    return None
                row = conn.execute(f"{_RUNS.select} WHERE id = ?", (run_id,)).fetchone()
            return _RUNS.from_row(row)

        return await self._run(op, f"claim_run {run_id!r}")

    async def orphaned_runs(self, dead: Collection[str]) -> list[RunRecord]:
        return await self._all(
            _RUNS,
            f"WHERE status = 'running' AND owner IS NOT NULL AND {_OWNER_GONE} ORDER BY rowid",
            _dump(list(dead)),
        )

    async def spending(
        self,
        *,
        session: str | None = None,
        agents: Collection[str] | None = None,
        agent_type: str | None = None,
        since: float | None = None,
    ) -> Spending:
        where: list[str] = []
        params: list[Any] = []
        if since is None:  # whole runs: their running totals
            select = (
                "SELECT SUM(cost_usd), SUM(input_tokens + output_tokens), SUM(steps),"
                " SUM(tool_calls) FROM runs"
            )
            column = ""
        else:  # the steps of a window
            select = (
                "SELECT SUM(s.cost_usd), SUM(s.input_tokens + s.output_tokens),"
                f" SUM({_COUNTED}), SUM(s.kind = 'tool' AND {_COUNTED})"
                " FROM steps s JOIN runs r ON r.id = s.run_id"
            )
            column = "r."
            where.append("s.started_at >= ?")
            params.append(since)
        if session is not None:
            where.append(f"{column}session = ?")
            params.append(session)
        if agents is not None:
            where.append(f"{column}agent IN (SELECT value FROM json_each(?))")
            params.append(_dump(list(agents)))
        if agent_type is not None:
            where.append(f"{column}agent_type = ?")
            params.append(agent_type)
        sql = select + (f" WHERE {' AND '.join(where)}" if where else "")

        def op(conn: sqlite3.Connection) -> Spending:
            usd, tokens, steps, tool_calls = conn.execute(sql, params).fetchone()
            return Spending(usd or 0.0, tokens or 0, steps or 0, tool_calls or 0)

        return await self._run(op)

    # write-ahead records and leases

    async def renew_lease(self, lease: LeaseRecord) -> None:
        row = _LEASES.to_row(lease)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"{_LEASES.insert} ON CONFLICT (owner) DO UPDATE"
                " SET heartbeat_at = excluded.heartbeat_at",
                row,
            )

        await self._run(op, f"renew_lease {lease.owner!r}")

    async def list_leases(self) -> list[LeaseRecord]:
        return await self._all(_LEASES, "ORDER BY started_at")

    async def drop_leases(self, owners: Collection[str]) -> None:
        await self._update(
            "DELETE FROM leases WHERE owner IN (SELECT value FROM json_each(?))",
            _dump(list(owners)),
            what="drop_leases",
        )

    # steps

    async def add_steps(self, steps: Sequence[StepRecord]) -> None:
        if not steps:
            return
        rows = [_STEPS.to_row(step) for step in steps]

        def op(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.executemany(_STEPS.insert, rows)

        await self._run(op, f"add_steps for run {steps[0].run_id!r}")

    def _enqueue(self, write: StepWrite) -> None:
        conn = self._conn
        if conn is None:
            raise StoreError(f"store {self.path} is closed")
        with self._steps_lock:
            batch = self._open_steps
            if batch is None:
                batch = self._open_steps = []
                loop = asyncio.get_running_loop()
                loop.run_in_executor(self._executor, self._write_steps, conn, batch, loop)
            batch.append(write)

    def _write_steps(
        self, conn: sqlite3.Connection, batch: list[StepWrite], loop: asyncio.AbstractEventLoop
    ) -> None:
        """Group commit: the steps recorded while the worker was busy go in one transaction.
        Under load this turns a commit and a thread hop per step into one per batch. The
        batch is first written whole, in a few statements; if any step of it is refused,
        it is written again step by step, each in a savepoint, so that one fails alone."""
        with self._steps_lock:
            if self._open_steps is batch:
                self._open_steps = None
        outcomes: list[BaseException | None]
        try:
            with transaction(conn):
                write_batch(conn, batch)
            outcomes = [None] * len(batch)
        except (sqlite3.IntegrityError, NotFoundError):
            try:
                with transaction(conn):
                    outcomes = [write_step(conn, write) for write in batch]
            except Exception as exc:  # the commit failed: none of the batch is stored
                outcomes = [StoreError(f"{write.what}: {exc}") for write in batch]
        except Exception as exc:
            outcomes = [StoreError(f"{write.what}: {exc}") for write in batch]
        loop.call_soon_threadsafe(settle, batch, outcomes)

    # checkpoints

    async def add_checkpoint(self, run_id: str, step: int, state: Json) -> CheckpointRecord:
        encoded = _dump(state)

        def op(conn: sqlite3.Connection) -> CheckpointRecord:
            created_at = self._clock()
            with transaction(conn):
                checkpoint_id = conn.execute(
                    "INSERT INTO checkpoints (run_id, step, state, created_at) VALUES (?, ?, ?, ?)",
                    (run_id, step, encoded, created_at),
                ).lastrowid
                assert checkpoint_id is not None  # set by every successful INSERT
                conn.execute(
                    "UPDATE runs SET last_checkpoint_id = ? WHERE id = ?", (checkpoint_id, run_id)
                )
            return CheckpointRecord(checkpoint_id, run_id, step, state, created_at)

        return await self._run(op, f"add_checkpoint for run {run_id!r}")

    # dead letters

    async def add_dead_letter(self, run_id: str, reason: str, packet: Json) -> DeadLetterRecord:
        encoded = _dump(packet)

        def op(conn: sqlite3.Connection) -> DeadLetterRecord:
            now = self._clock()
            dead_letter_id = _insert_dead_letter(conn, run_id, reason, encoded, now)
            return DeadLetterRecord(dead_letter_id, run_id, reason, packet, "open", now, now)

        return await self._run(op, f"add_dead_letter for run {run_id!r}")

    # idempotency

    async def put_idempotent(self, record: IdempotencyRecord) -> IdempotencyRecord:
        row = _IDEMPOTENCY.to_row(record)

        def op(conn: sqlite3.Connection) -> IdempotencyRecord:
            if conn.execute(f"{_IDEMPOTENCY.insert} ON CONFLICT (key) DO NOTHING", row).rowcount:
                return record
            # Records are never updated or deleted, so the winner read here is final.
            stored = conn.execute(f"{_IDEMPOTENCY.select} WHERE key = ?", (record.key,)).fetchone()
            return _IDEMPOTENCY.from_row(stored)

        return await self._run(op, f"put_idempotent {record.key!r}")

    # audit

    async def append_audit(self, seal: Callable[[AuditEntry | None], AuditEntry]) -> AuditEntry:
        def op(conn: sqlite3.Connection) -> AuditEntry:
            with transaction(conn):
                return append_audit(conn, seal)

        return await self._run(op, "append_audit")

    async def audit_head(self) -> tuple[int, str] | None:
        def op(conn: sqlite3.Connection) -> tuple[int, str] | None:
            row = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            return None if row is None else (row[0], row[1])

        return await self._run(op)

    # lifecycle

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        # Queued behind any work still pending, so that work finishes first.
        await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)
