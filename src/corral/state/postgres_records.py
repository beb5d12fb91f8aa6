"""The PostgreSQL store's records of one table each (a part of PostgresStore): checkpoints,
dead letters, idempotent results, artifacts, agent keys and the audit log.

Each write is one transaction (PostgresStore._write); each check-and-set one statement
whose WHERE clause holds the state it expects. An audit append holds the audit lock
(postgres_steps.lock_audit) from its first statement to its commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from corral.state.postgres_steps import Conn, append_entries, lock_audit
from corral.state.postgres_tables import insert_sql, params
from corral.state.records import (
    AuditEntry,
    CheckpointRecord,
    DeadLetterRecord,
    IdempotencyRecord,
    Json,
)
from corral.state.sqlite_tables import (
    _IDEMPOTENCY,
    _dump,
    _Table,
)

R = TypeVar("R")
T = TypeVar("T")


async def insert_dead_letter(conn: Conn, run_id: str, reason: str, packet: str, now: float) -> int:
    cur = await conn.execute(
        "INSERT INTO dead_letters (run_id, reason, packet, status, created_at, updated_at)"
        " VALUES (%s, %s, %s, 'open', %s, %s) RETURNING id",
        (run_id, reason, packet, now, now),
    )
    row = await cur.fetchone()
    assert row is not None  # RETURNING of a successful INSERT
    dead_letter_id: int = row[0]
    return dead_letter_id


class PostgresRecords:
    """Mixed into PostgresStore, whose statement helpers and clock it uses."""

    if TYPE_CHECKING:  # what PostgresStore provides
        _clock: Callable[[], float]

        async def _read(self, op: Callable[[Conn], Awaitable[T]], what: str = "") -> T: ...
        async def _write(self, op: Callable[[Conn], Awaitable[T]], what: str = "") -> T: ...
        async def _one(self, table: _Table[R], where: str, *args: Any) -> R | None: ...
        async def _all(self, table: _Table[R], where: str, *args: Any) -> list[R]: ...
        async def _insert(self, table: _Table[R], record: R, what: str) -> None: ...
        async def _update(self, sql: str, *args: Any, what: str = "") -> bool: ...

    # checkpoints

    async def add_checkpoint(self, run_id: str, step: int, state: Json) -> CheckpointRecord:
        encoded = _dump(state)

        async def op(conn: Conn) -> CheckpointRecord:
            created_at = self._clock()
            row = await (
                await conn.execute(
                    "INSERT INTO checkpoints (run_id, step, state, created_at)"
                    " VALUES (%s, %s, %s, %s) RETURNING id",
                    (run_id, step, encoded, created_at),
                )
            ).fetchone()
            assert row is not None  # RETURNING of a successful INSERT
            checkpoint_id: int = row[0]
            await conn.execute(
                "UPDATE runs SET last_checkpoint_id = GREATEST(last_checkpoint_id, %s)"
                " WHERE id = %s",
                (checkpoint_id, run_id),
            )
            return CheckpointRecord(checkpoint_id, run_id, step, state, created_at)

        return await self._write(op, f"add_checkpoint for run {run_id!r}")

    # dead letters

    async def add_dead_letter(self, run_id: str, reason: str, packet: Json) -> DeadLetterRecord:
        encoded = _dump(packet)

        async def op(conn: Conn) -> DeadLetterRecord:
            now = self._clock()
            dead_letter_id = await insert_dead_letter(conn, run_id, reason, encoded, now)
            return DeadLetterRecord(dead_letter_id, run_id, reason, packet, "open", now, now)

        return await self._write(op, f"add_dead_letter for run {run_id!r}")

    # idempotency

    async def put_idempotent(self, record: IdempotencyRecord) -> IdempotencyRecord:
        row = params(_IDEMPOTENCY, record)
        sql = insert_sql(_IDEMPOTENCY) + " ON CONFLICT (key) DO NOTHING"

        async def op(conn: Conn) -> IdempotencyRecord:
            if (await conn.execute(sql, row)).rowcount:
                return record
            # Records are never updated, so the winner read here (committed before this
            # statement began: the INSERT waited for it) is final.
            stored = await (
                await conn.execute(f"{_IDEMPOTENCY.select} WHERE key = %s", (record.key,))
            ).fetchone()
            assert stored is not None  # the conflicting row
            return _IDEMPOTENCY.from_row(stored)

        return await self._write(op, f"put_idempotent {record.key!r}")

    # audit

    async def append_audit(self, seal: Callable[[AuditEntry | None], AuditEntry]) -> AuditEntry:
        async def op(conn: Conn) -> AuditEntry:
            await lock_audit(conn)
            (entry,) = await append_entries(conn, [seal])
            return entry

        return await self._write(op, "append_audit")

    async def audit_head(self) -> tuple[int, str] | None:
        async def op(conn: Conn) -> tuple[int, str] | None:
            cur = await conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1")
            row = await cur.fetchone()
            return None if row is None else (row[0], row[1])

        return await self._read(op)
