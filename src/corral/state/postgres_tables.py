"""The PostgreSQL store's statements, built on the tables both stores share
(sqlite_tables._Table: the same columns in field order, the same JSON encodings), in
psycopg's placeholders; and how a driver error becomes a StoreError."""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors

from corral.state.sqlite_tables import (
    _AUDIT,
    _RUNS,
    _SAVED_RUN_COLUMNS,
    _TOTALS,
    _Table,
)
from corral.state.store import ConstraintError, StoreError


@functools.lru_cache(maxsize=256)
def dialect(sql: str) -> str:
    """A statement written with SQLite's ? placeholders (store_common's), in psycopg's."""
    return sql.replace("?", "%s")


def insert_sql(table: _Table[Any]) -> str:
    placeholders = ", ".join(["%s"] * len(table.columns))
    return f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({placeholders})"


def plain(row: Sequence[Any]) -> list[Any]:
    """A row as psycopg should send it: enum members (RunStatus, HaltReason) as their value."""
    return [value.value if isinstance(value, enum.Enum) else value for value in row]


def params(table: _Table[Any], record: Any) -> list[Any]:
    return plain(table.to_row(record))


def named(table: _Table[Any], record: Any) -> dict[str, Any]:
    return dict(zip(table.columns, params(table, record), strict=True))


# A run's owner is gone: one of the owners found dead (a text[] parameter), or one with no
# lease at all (a process writes its lease before it owns any run).
OWNER_GONE = "(owner = ANY(%s) OR owner NOT IN (SELECT owner FROM leases))"

# As sqlite_tables._SAVE_RUN: every column but id and the kill time; last_checkpoint_id
# never moves back.
SAVE_RUN = (
    "UPDATE runs SET "
    + ", ".join(f"{c} = %({c})s" for c in _SAVED_RUN_COLUMNS)
    + ", last_checkpoint_id = NULLIF(GREATEST(COALESCE(last_checkpoint_id, 0),"
    " COALESCE(%(last_checkpoint_id)s::bigint, 0)), 0) WHERE id = %(id)s"
)
SAVE_TOTALS = f"UPDATE runs SET {', '.join(f'{c} = %({c})s' for c in _TOTALS)} WHERE id = %(id)s"
SETTLE_INFLIGHT = "DELETE FROM inflight WHERE id = %s"
SET_AUDIT_HEAD = (
    "INSERT INTO audit_head (id, seq, hash) VALUES (1, %s, %s)"
    " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash"
)
LAST_AUDIT = f"{_AUDIT.select} ORDER BY pos DESC LIMIT 1"
RUN_BY_ID = f"{_RUNS.select} WHERE id = %s"

# SQLite's wording of each kind of broken constraint, so a caller (or a test) reads the
# same kind whichever store refused the write.
_KINDS: tuple[tuple[type[psycopg.Error], str], ...] = (
    (errors.UniqueViolation, "UNIQUE constraint failed"),
    (errors.ForeignKeyViolation, "FOREIGN KEY constraint failed"),
    (errors.CheckViolation, "CHECK constraint failed"),
    (errors.NotNullViolation, "NOT NULL constraint failed"),
)


def store_error(exc: psycopg.Error, what: str) -> StoreError:
    """The StoreError for a driver error: ConstraintError for a broken constraint or a value
    PostgreSQL refuses (a NUL in text, a number out of range), StoreError for the rest (the
    server gone, a pool timeout)."""
    prefix = f"{what}: " if what else ""
    detail = str(exc).strip()
    if isinstance(exc, errors.IntegrityError | errors.DataError):
        kind = next((name for cls, name in _KINDS if isinstance(exc, cls)), "constraint failed")
        return ConstraintError(f"{prefix}{kind}: {detail}")
    return StoreError(f"{prefix}the PostgreSQL store failed: {detail or type(exc).__name__}")
