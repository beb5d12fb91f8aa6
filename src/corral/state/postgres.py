"""PostgresStore: the Store in a PostgreSQL database, shared by the processes of many nodes.

Connections come from a psycopg 3 AsyncConnectionPool (autocommit; each write is one
explicit transaction). Construction migrates the database with one blocking connection
(do it at startup, as for SQLiteStore); the pool opens on first use, in the running loop.

Order within one store object is what SQLiteStore's single worker gives: writes run one
after another in the order they were called (of two racing deciders the first called
wins, as in SQLite), a read waits for the writes called before it (so it sees every step
queued before it), and steps recorded while the writer is busy share a group commit that
is written after every write called before the first of them. Reads run concurrently on
the pool. Between processes, PostgreSQL's row locks and the audit lock (postgres_steps)
decide; every check-and-set is one statement whose WHERE clause holds the state it
expects, which READ COMMITTED re-checks on the row a concurrent writer committed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from corral.state.postgres_approvals import PostgresApprovals
from corral.state.postgres_observe import PostgresObserve
from corral.state.postgres_records import PostgresRecords, insert_dead_letter
from corral.state.postgres_schema import check_migrated, migrate
from corral.state.postgres_steps import (
    Conn,
    PostgresGroupCommit,
)
from corral.state.postgres_tables import (
    OWNER_GONE,
    RUN_BY_ID,
    SAVE_RUN,
    dialect,
    insert_sql,
    named,
    params,
    store_error,
)
from corral.state.records import (
    DeadLetterRecord,
    Json,
    LeaseRecord,
    RunRecord,
    StepRecord,
)
from corral.state.sqlite_steps import StepWrite
from corral.state.sqlite_tables import (
    _KILL_REQUESTS,
    _LEASES,
    _RUNS,
    _STEPS,
    _dump,
    _Table,
)
from corral.state.store import NotFoundError, Store, StoreError, add_topup
from corral.state.store_common import (
    REOPEN_FIND,
    REOPEN_RUN,
    RETRY_DEAD_LETTERS,
    Records,
    halted_reason,
    reopened_topup,
)

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_POOL_SIZE = 10

_REOPEN_FIND = dialect(REOPEN_FIND) + " FOR UPDATE"
_REOPEN_RUN = dialect(REOPEN_RUN)
_RETRY_DEAD_LETTERS = dialect(RETRY_DEAD_LETTERS)


def describe(url: str) -> str:
    """The URL without its credentials, for messages."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://?"
    host, port, dbname = info.get("host", ""), info.get("port", ""), info.get("dbname", "")
    return f"postgresql://{host}{f':{port}' if port else ''}/{dbname}"


def _migrate(url: str, timeout: float, *, apply: bool) -> None:
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=max(2, round(timeout))) as conn:
            if apply:
                migrate(conn)
            else:
                check_migrated(conn)
    except psycopg.Error as exc:
        raise StoreError(f"cannot open {describe(url)}: {exc}") from exc


async def _save_run(conn: Conn, row: Mapping[str, Any], what: str) -> None:
    cur = await conn.execute(SAVE_RUN, row)
    if cur.rowcount == 0:
        raise NotFoundError(f"{what}: no run {row['id']!r}")


class PostgresStore(
    PostgresGroupCommit, PostgresRecords, Records, PostgresApprovals, PostgresObserve, Store
):
    """A Store in a PostgreSQL database (the first schema of the URL's search_path).

    `pool_size` bounds the connections this process holds; `timeout` is how long an
    operation waits for one (then StoreError: the database is unreachable or saturated).
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        migrate: bool = True,
    ) -> None:
        """`migrate=False`: refuse (SchemaVersionError) a schema that is not the latest
        rather than migrate it (`corral serve` leaves that to `corral migrate`)."""
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        self.url = url
        self.name = describe(url)
        self._clock = clock
        _migrate(url, timeout, apply=migrate)
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]] = (
            AsyncConnectionPool(
                url,
                min_size=1,
                max_size=pool_size,
                timeout=timeout,
                open=False,
                kwargs={"autocommit": True, "connect_timeout": max(2, round(timeout))},
                name=f"corral-store {self.name}",
            )
        )
        self._opened = False
        self._open_lock = asyncio.Lock()
        self._closed = False
        # The completion of the last write called: the next write (or read) waits for it.
        self._tail: asyncio.Future[None] | None = None
        # The batch of steps still open to more (see _enqueue).
        self._open_steps: list[StepWrite] | None = None
        self._batches: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str, *, migrate: bool = True) -> PostgresStore:
        """The store a postgresql:// (or postgres://) URL names. Its query may hold
        pool_size (DEFAULT_POOL_SIZE if not) besides libpq's own parameters
        (sslmode, options, application_name, ...), which are passed on."""
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        sizes = [value for key, value in query if key == "pool_size"]
        if not sizes:
            return cls(url, migrate=migrate)
        try:
            pool_size = int(sizes[-1])
        except ValueError:
            raise ValueError(
                f"store URL {describe(url)}: pool_size must be a number, got {sizes[-1]!r}"
            ) from None
        # quote, not quote_plus: libpq does not read "+" as a space.
        rest = urlencode([(k, v) for k, v in query if k != "pool_size"], quote_via=quote)
        return cls(urlunsplit(parts._replace(query=rest)), pool_size=pool_size, migrate=migrate)

    # running statements

    @staticmethod
    def _dialect(sql: str) -> str:
        return dialect(sql)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"store {self.name} is closed")

    async def _connection_pool(self) -> AsyncConnectionPool[Conn]:
        if not self._opened:
            async with self._open_lock:
                if not self._opened:
                    await self._pool.open(wait=False)
                    self._opened = True
        return self._pool

    async def _execute(self, op: Callable[[Conn], Awaitable[T]], what: str, write: bool) -> T:
        try:
            pool = await self._connection_pool()
            async with pool.connection() as conn:
                if not write:
                    return await op(conn)
                async with conn.transaction():
                    return await op(conn)
        except psycopg.Error as exc:
            raise store_error(exc, what) from exc

    def _next_turn(self) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        """Take the next place among this store's writes: the write before (None if all are
        done) and the future to complete once this one is done."""
        prior, mine = self._tail, asyncio.get_running_loop().create_future()
        self._tail = mine
        return (None if prior is None or prior.done() else prior), mine

    @staticmethod
    def _done(prior: asyncio.Future[None] | None, mine: asyncio.Future[None]) -> None:
        # A write cancelled while waiting its turn still releases the next only after the
        # one before it.
        if prior is None or prior.done():
            if not mine.done():
                mine.set_result(None)
        else:
            prior.add_done_callback(lambda _: None if mine.done() else mine.set_result(None))

    async def _write(self, op: Callable[[Conn], Awaitable[T]], what: str = "") -> T:
        """Run `op` in one transaction, after every write of this store called before it."""
        self._check_open()
        # Steps recorded after this write must be written after it: they start a new batch.
        self._open_steps = None
        prior, mine = self._next_turn()
        try:
            if prior is not None:
                await asyncio.wait({prior})
            return await self._execute(op, what, write=True)
        finally:
            self._done(prior, mine)

    async def _read(self, op: Callable[[Conn], Awaitable[T]], what: str = "") -> T:
        """Run `op` once every write of this store called before it is done."""
        self._check_open()
        prior = self._tail
        if prior is not None and not prior.done():
            await asyncio.wait({prior})
        return await self._execute(op, what, write=False)

    async def _one(self, table: _Table[R], where: str, *args: Any) -> R | None:
        async def op(conn: Conn) -> R | None:
            row = await (await conn.execute(f"{table.select} {where}", args)).fetchone()
            return None if row is None else table.from_row(row)

        return await self._read(op)

    async def _all(self, table: _Table[R], where: str, *args: Any) -> list[R]:
        async def op(conn: Conn) -> list[R]:
            rows = await (await conn.execute(f"{table.select} {where}", args)).fetchall()
            return [table.from_row(row) for row in rows]

        return await self._read(op)

    async def _insert(self, table: _Table[R], record: R, what: str) -> None:
        row = params(table, record)
        sql = insert_sql(table)

        async def op(conn: Conn) -> None:
            await conn.execute(sql, row)

        await self._write(op, what)

    async def _update(self, sql: str, *args: Any, what: str = "") -> bool:
        async def op(conn: Conn) -> bool:
            return (await conn.execute(sql, args)).rowcount > 0

        return await self._write(op, what)

    # runs

    async def save_run(self, run: RunRecord) -> None:
        row = named(_RUNS, run)

        async def op(conn: Conn) -> None:
            await _save_run(conn, row, "save_run")

        await self._write(op, f"save_run {run.id!r}")

    async def kill_requests(self) -> dict[str, float]:
        async def op(conn: Conn) -> dict[str, float]:
            return {
                run_id: at for run_id, at in await (await conn.execute(_KILL_REQUESTS)).fetchall()
            }

        return await self._read(op, "kill_requests")

    async def halt_run(self, run: RunRecord, packet: Json) -> DeadLetterRecord:
        reason = str(halted_reason(run))
        row = named(_RUNS, run)
        encoded = _dump(packet)

        async def op(conn: Conn) -> DeadLetterRecord:
            now = self._clock()
            await _save_run(conn, row, "halt_run")
            dead_letter_id = await insert_dead_letter(conn, run.id, reason, encoded, now)
            return DeadLetterRecord(dead_letter_id, run.id, reason, packet, "open", now, now)

        return await self._write(op, f"halt_run {run.id!r}")

    async def reopen_run(self, run_id: str, *, topup: Mapping[str, float], at: float) -> RunRecord:
        add_topup(None, topup)  # refuse a bad top-up before touching the database

        async def op(conn: Conn) -> RunRecord:
            cur = await conn.execute(_REOPEN_FIND, (run_id,))
            total = reopened_topup(run_id, await cur.fetchone(), topup)
            await conn.execute(_REOPEN_RUN, (at, total, run_id))
            await conn.execute(_RETRY_DEAD_LETTERS, (at, run_id))
            row = await (await conn.execute(RUN_BY_ID, (run_id,))).fetchone()
            assert row is not None  # locked above
            return _RUNS.from_row(row)

        return await self._write(op, f"reopen_run {run_id!r}")

    async def claim_run(
        self, run_id: str, owner: str, *, dead: Collection[str], unowned: bool = True
    ) -> RunRecord | None:
        free = f"owner = %s OR {OWNER_GONE}" + (" OR owner IS NULL" if unowned else "")
        args = (owner, run_id, owner, list(dead))

        async def op(conn: Conn) -> RunRecord | None:
            # One statement: a racing claimer's UPDATE waits for this row, then re-checks
            # the WHERE clause on the owner this one wrote, which is alive.
            row = await (
                await conn.execute(
                    f"UPDATE runs SET owner = %s WHERE id = %s AND status = 'running'"
                    f" AND ({free}) RETURNING {', '.join(_RUNS.columns)}",
                    args,
                )
            ).fetchone()
            return None if row is None else _RUNS.from_row(row)

        return await self._write(op, f"claim_run {run_id!r}")

    async def orphaned_runs(self, dead: Collection[str]) -> list[RunRecord]:
        return await self._all(
            _RUNS,
            f"WHERE status = 'running' AND owner IS NOT NULL AND {OWNER_GONE} ORDER BY rowid",
            list(dead),
        )

    # write-ahead records and leases

    async def renew_lease(self, lease: LeaseRecord) -> None:
        row = params(_LEASES, lease)
        sql = insert_sql(_LEASES) + (
            " ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
        )

        async def op(conn: Conn) -> None:
            await conn.execute(sql, row)

        await self._write(op, f"renew_lease {lease.owner!r}")

    async def list_leases(self) -> list[LeaseRecord]:
        return await self._all(_LEASES, "ORDER BY started_at, owner")

    async def drop_leases(self, owners: Collection[str]) -> None:
        await self._update(
            "DELETE FROM leases WHERE owner = ANY(%s)", list(owners), what="drop_leases"
        )

    # steps

    async def add_steps(self, steps: Sequence[StepRecord]) -> None:
        if not steps:
            return
        rows = [params(_STEPS, step) for step in steps]
        sql = insert_sql(_STEPS)

        async def op(conn: Conn) -> None:
            async with conn.cursor() as cur:
                await cur.executemany(sql, rows)

        await self._write(op, f"add_steps for run {steps[0].run_id!r}")

    # lifecycle

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Writes called before the close (queued steps too) finish first.
        if self._tail is not None and not self._tail.done():
            await asyncio.wait({self._tail})
        if self._opened:
            await self._pool.close()
