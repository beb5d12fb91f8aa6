"""The PostgreSQL store's group commit and audit appends.

Steps of calls coming back and write-ahead records of calls going out are written in
batches (sqlite_steps.StepWrite, settled by sqlite_steps.settle, as in SQLite): a batch
is written whole in one transaction, and if any write of it is refused, again write by
write, each in a savepoint, so that one fails alone.

The audit log's head is serialized across every process of the deployment by a
transaction-level advisory lock (AUDIT_LOCK, per schema), taken as the first statement of
any transaction that appends: the last entry is read after the lock is granted, and under
READ COMMITTED that read sees the entry of the previous holder, which committed before
its lock was released. So two appenders never chain onto the same parent. Taking it first
means a transaction never waits for the lock while holding row locks another appender
could need.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import AsyncConnection

from corral.state.postgres_schema import AUDIT_LOCK, LOCK_SQL
from corral.state.postgres_tables import (
    LAST_AUDIT,
    SAVE_TOTALS,
    SET_AUDIT_HEAD,
    SETTLE_INFLIGHT,
    insert_sql,
    params,
    plain,
    store_error,
)
from corral.state.records import AuditEntry
from corral.state.sqlite_steps import StepWrite, settle
from corral.state.sqlite_tables import _AUDIT, _INFLIGHT, _STEPS
from corral.state.store import ConstraintError, NotFoundError, StoreError
from corral.state.store_common import StepQueue

T = TypeVar("T")

Conn = AsyncConnection[tuple[Any, ...]]
Seal = Callable[[AuditEntry | None], AuditEntry]

_INSERT_AUDIT = insert_sql(_AUDIT)
_INSERT_STEP = insert_sql(_STEPS)
_INSERT_INFLIGHT = insert_sql(_INFLIGHT)


async def lock_audit(conn: Conn) -> None:
    """Exclude every other appender until the caller's transaction ends."""
    await conn.execute(LOCK_SQL, (AUDIT_LOCK,))


async def last_audit(conn: Conn) -> AuditEntry | None:
    row = await (await conn.execute(LAST_AUDIT)).fetchone()
    return None if row is None else _AUDIT.from_row(row)


async def append_entries(conn: Conn, seals: list[Seal]) -> list[AuditEntry]:
    """Seal the entries in order on the last one and move the head, inside the caller's
    transaction, which holds the audit lock (lock_audit)."""
    last = await last_audit(conn)
    entries: list[AuditEntry] = []
    for seal in seals:
        last = seal(last)
        entries.append(last)
    async with conn.cursor() as cur:
        await cur.executemany(_INSERT_AUDIT, [params(_AUDIT, entry) for entry in entries])
        await cur.execute(SET_AUDIT_HEAD, (entries[-1].seq, entries[-1].hash))
    return entries


async def write_batch(conn: Conn, batch: list[StepWrite]) -> None:
    """All writes of a batch inside the caller's transaction: the write-ahead records first
    (so one settled in the same batch is there to delete), the steps, their audit entries
    chained in order, each run's newest totals, the records settled."""
    async with conn.cursor() as cur:
        begins = [plain(write.begins) for write in batch if write.begins is not None]
        if begins:
            await cur.executemany(_INSERT_INFLIGHT, begins)
        steps = [plain(write.step_row) for write in batch if write.step_row is not None]
        if steps:
            await cur.executemany(_INSERT_STEP, steps)
        seals = [write.seal for write in batch if write.seal is not None]
        if seals:
            await append_entries(conn, seals)
        # A step carries its run's running totals, so the last one of a run is all that counts.
        totals = {write.totals["id"]: write.totals for write in batch if write.totals is not None}
        for row in totals.values():
            await cur.execute(SAVE_TOTALS, row)
            if cur.rowcount == 0:
                raise NotFoundError(f"a step of the batch names no run ({row['id']!r})")
        for write in batch:
            if write.settles is not None:
                await cur.execute(SETTLE_INFLIGHT, (write.settles,))
                if cur.rowcount == 0:
                    raise NotFoundError("a step of the batch settles a call already settled")


async def write_one(conn: Conn, write: StepWrite) -> BaseException | None:
    """One write of a batch, in a savepoint: its error, or None once it is written."""
    try:
        async with conn.transaction(), conn.cursor() as cur:
            if write.begins is not None:
                await cur.execute(_INSERT_INFLIGHT, plain(write.begins))
            if write.totals is not None:
                await cur.execute(SAVE_TOTALS, write.totals)
                if cur.rowcount == 0:
                    raise NotFoundError(f"record_step: no run {write.totals['id']!r}")
            if write.step_row is not None:
                await cur.execute(_INSERT_STEP, plain(write.step_row))
            if write.seal is not None:
                await append_entries(conn, [write.seal])
            # Exactly once: a call recovery charged already (its process was taken for
            # dead) must not be counted again by its own step.
            if write.settles is not None:
                await cur.execute(SETTLE_INFLIGHT, (write.settles,))
                if cur.rowcount == 0:
                    raise ConstraintError(
                        f"{write.what}: call {write.settles!r} was settled already"
                    )
    except psycopg.Error as exc:
        return store_error(exc, write.what)
    except Exception as exc:  # a refused write, or its seal failing: it fails alone
        return exc
    return None


class PostgresGroupCommit(StepQueue):
    """Mixed into PostgresStore: the group commit behind record_step, queue_step and
    begin_call (store_common.StepQueue), each batch taking its place among the store's
    writes when it opens."""

    if TYPE_CHECKING:  # what PostgresStore provides
        _open_steps: list[StepWrite] | None
        _batches: set[asyncio.Task[None]]

        def _check_open(self) -> None: ...
        def _next_turn(self) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]: ...
        @staticmethod
        def _done(prior: asyncio.Future[None] | None, mine: asyncio.Future[None]) -> None: ...
        async def _execute(
            self, op: Callable[[Conn], Awaitable[T]], what: str, write: bool
        ) -> T: ...

    def _enqueue(self, write: StepWrite) -> None:
        """Add the write to the open batch, or open one: it takes its place among the
        store's writes now, and stays open to more until its turn comes."""
        self._check_open()
        batch = self._open_steps
        if batch is None:
            batch = self._open_steps = []
            prior, mine = self._next_turn()
            task = asyncio.get_running_loop().create_task(self._write_steps(batch, prior, mine))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
        batch.append(write)

    async def _write_steps(
        self,
        batch: list[StepWrite],
        prior: asyncio.Future[None] | None,
        mine: asyncio.Future[None],
    ) -> None:
        try:
            if prior is not None:
                await asyncio.wait({prior})
            if self._open_steps is batch:
                self._open_steps = None
            settle(batch, await self._batch_outcomes(batch))
        finally:
            self._done(prior, mine)

    async def _batch_outcomes(self, batch: list[StepWrite]) -> list[BaseException | None]:
        sealed = any(write.seal is not None for write in batch)

        async def whole(conn: Conn) -> None:
            if sealed:
                await lock_audit(conn)
            await write_batch(conn, batch)

        async def one_by_one(conn: Conn) -> list[BaseException | None]:
            if sealed:
                await lock_audit(conn)
            return [await write_one(conn, write) for write in batch]

        try:
            await self._execute(whole, "", write=True)
            return [None] * len(batch)
        except (ConstraintError, NotFoundError):
            pass
        except Exception as exc:
            return [StoreError(f"{write.what}: {exc}") for write in batch]
        try:
            return await self._execute(one_by_one, "", write=True)
        except Exception as exc:  # the commit failed: none of the batch is stored
            return [StoreError(f"{write.what}: {exc}") for write in batch]
