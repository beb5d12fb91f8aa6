"""Copy every record of one store into another, empty one (`corral store copy`).

Rows move as they are stored, column by column (the _Table column lists of
sqlite_tables.py, which both stores share): JSON stays the text it was, sealed values
stay sealed (no data key is needed, and the destination must be used with the same
CORRAL_DATA_KEY), ids, sequence numbers and hashes are kept, so the audit chain verifies
in the destination as it did in the source. The insertion order the stores read back
(SQLite's rowid, PostgreSQL's `rowid` identity column, the audit log's `pos`) is copied as
a column of its own.

The source is read in one read transaction (a consistent snapshot) and is never changed:
a SQLite file is opened read-only and not migrated, so its schema version must be this
Corral's. The destination is created and migrated if need be, then written in one
transaction holding its tables locked: it is refused unless every table is empty, and
either every row arrives or none does. Its sequences (PostgreSQL's identity columns,
SQLite's AUTOINCREMENT counters) are set past both the copied ids and the source's own
high-water mark, so the next insert takes a fresh id.
"""

from __future__ import annotations

import contextlib
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg

from corral.state import postgres_schema, sqlite_schema
from corral.state.postgres import describe
from corral.state.sqlite import _connect
from corral.state.sqlite_tables import (
    _AGENT_KEYS,
    _APPROVALS,
    _ARTIFACTS,
    _AUDIT,
    _CHECKPOINTS,
    _DEAD_LETTERS,
    _IDEMPOTENCY,
    _INFLIGHT,
    _LEASES,
    _PROPOSALS,
    _RUNS,
    _STEPS,
    _Table,
)
from corral.state.store import SchemaVersionError, StoreError

_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
BATCH = 500


@dataclass(frozen=True, slots=True)
class Copied:
    """One table as the copy moves it: its columns, led by the column that holds its
    insertion order when that is not one of the record's fields."""

    name: str
    columns: tuple[str, ...]
    order: str


def _copied(table: _Table[Any], *, position: str | None = None, order: str = "") -> Copied:
    columns = table.columns if position is None else (position, *table.columns)
    return Copied(table.name, columns, position or order)


# Parents before children (runs.parent_run_id: a run's parent was inserted before it).
TABLES: tuple[Copied, ...] = (
    _copied(_RUNS, position="rowid"),
    _copied(_STEPS, order="run_id, seq"),
    _copied(_CHECKPOINTS, order="id"),
    _copied(_DEAD_LETTERS, order="id"),
    _copied(_APPROVALS, position="rowid"),
    _copied(_PROPOSALS, position="rowid"),
    _copied(_IDEMPOTENCY, order="key"),
    _copied(_ARTIFACTS, order="handle"),
    _copied(_AGENT_KEYS, position="rowid"),
    _copied(_INFLIGHT, position="rowid"),
    _copied(_LEASES, order="owner"),
    _copied(_AUDIT, position="pos"),
    # The audit log's head: one row, written with every entry; not a record of its own.
    Copied("audit_head", ("id", "seq", "hash"), "id"),
)


class CopyRefused(StoreError):
    """The destination holds records already: a copy does not merge stores."""


@dataclass(frozen=True, slots=True)
class CopyReport:
    """What a copy moved: rows per table (in copy order), as read from the source and as
    counted in the destination after the commit, and the next id of each sequence."""

    source: str
    destination: str
    copied: dict[str, int]
    counted: dict[str, int]
    sequences: dict[str, int] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return self.copied == self.counted


class _End(ABC):
    """One store's database, spoken to as rows: read as a source, written as a
    destination."""

    where: str
    mark: str  # the driver's placeholder

    @abstractmethod
    def version(self) -> int:
        """The schema version the database is at."""

    @abstractmethod
    def begin_read(self) -> None:
        """Open the read transaction every read of the copy shares (one snapshot)."""

    @abstractmethod
    def rows(self, table: Copied) -> Generator[Sequence[Any], None, None]:
        """The table's rows, as stored, in its insertion order."""

    @abstractmethod
    def high_water(self) -> dict[str, int]:
        """Per table with a sequence, the highest id it ever handed out."""

    @abstractmethod
    def begin_write(self) -> None:
        """Open the copy's one write transaction, keeping other writers out."""

    @abstractmethod
    def occupied(self) -> list[str]:
        """The tables that hold a row."""

    @abstractmethod
    def insert(self, table: Copied, rows: list[Sequence[Any]]) -> None:
        """Write rows as they were read from either kind of store."""

    @abstractmethod
    def set_sequences(self, high_water: dict[str, int]) -> dict[str, int]:
        """Move every sequence past the copied ids and the source's `high_water`; the
        next id of each, by table.column."""

    @abstractmethod
    def count(self, table: str) -> int: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def rollback(self) -> None:
        """End the transaction open, if any, writing nothing."""

    @abstractmethod
    def close(self) -> None: ...

    def insert_sql(self, table: Copied) -> str:
        marks = ", ".join([self.mark] * len(table.columns))
        return f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks})"


class _SQLiteEnd(_End):
    mark = "?"

    def __init__(self, path: str, *, create: bool) -> None:
        self.where = path
        if create:
            self.conn = _connect(path, 5.0)  # WAL, foreign keys, migrated (StoreError)
            return
        if not Path(path).is_file():
            raise StoreError(f"cannot open {path}: no such file")
        try:
            # Read-only and never migrated: the source is left exactly as it was.
            self.conn = sqlite3.connect(
                f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
            )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open {path}: {exc}") from exc
        try:
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:  # not a database, say
            self.conn.close()
            raise StoreError(f"cannot open {path}: {exc}") from exc

    def version(self) -> int:
        version: int = self.conn.execute("PRAGMA user_version").fetchone()[0]
        return version

    def begin_read(self) -> None:
        self.conn.execute("BEGIN")
        self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot

    def rows(self, table: Copied) -> Generator[Sequence[Any], None, None]:
        cur = self.conn.execute(
            f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {table.order}"
        )
        while batch := cur.fetchmany(BATCH):
            yield from batch

    def high_water(self) -> dict[str, int]:
        return {
            name: seq for name, seq in self.conn.execute("SELECT name, seq FROM sqlite_sequence")
        }

    def begin_write(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")  # the write lock, held to the commit

    def occupied(self) -> list[str]:
        return [
            t.name
            for t in TABLES
            if self.conn.execute(f"SELECT EXISTS (SELECT 1 FROM {t.name})").fetchone()[0]
        ]

    def insert(self, table: Copied, rows: list[Sequence[Any]]) -> None:
        self.conn.executemany(self.insert_sql(table), rows)

    def set_sequences(self, high_water: dict[str, int]) -> dict[str, int]:
        # The AUTOINCREMENT tables: their counters only grow, and inserting ids raised them
        # to the highest copied; the source may have handed out higher ones since purged.
        counters = [
            name
            for (name,) in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE '%AUTOINCREMENT%'"
            )
        ]
        nexts: dict[str, int] = {}
        for name in counters:
            row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (name,))
            found = row.fetchone()
            seq = max(found[0] if found else 0, high_water.get(name, 0))
            if found:
                self.conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (seq, name))
            elif seq:
                self.conn.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (name, seq)
                )
            column = self.conn.execute(f"SELECT name FROM pragma_table_info('{name}') WHERE pk = 1")
            nexts[f"{name}.{column.fetchone()[0]}"] = seq + 1
        return nexts

    def count(self, table: str) -> int:
        counted: int = self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return counted

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


# Every identity (or serial) column of the connection's schema, with its sequence.
_IDENTITIES = (
    "SELECT table_name, column_name, pg_get_serial_sequence(quote_ident(table_name),"
    " column_name) FROM information_schema.columns WHERE table_schema = current_schema()"
    " AND pg_get_serial_sequence(quote_ident(table_name), column_name) IS NOT NULL"
    " ORDER BY table_name, column_name"
)
_BOOLEANS = (
    "SELECT table_name, column_name FROM information_schema.columns"
    " WHERE table_schema = current_schema() AND data_type = 'boolean'"
)


def libpq_url(url: str) -> str:
    """A Corral PostgreSQL URL as libpq takes it: without Corral's own pool_size."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    rest = urlencode([(k, v) for k, v in query if k != "pool_size"], quote_via=quote)
    return urlunsplit(parts._replace(query=rest))


class _PostgresEnd(_End):
    mark = "%s"

    def __init__(self, url: str, *, create: bool) -> None:
        self.where = describe(url)
        try:
            # Autocommit: migrate runs its own transactions; the copy opens one explicitly.
            self.conn: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(
                libpq_url(url), autocommit=True, connect_timeout=10
            )
        except psycopg.Error as exc:
            raise StoreError(f"cannot open {self.where}: {exc}") from exc
        try:
            if create:
                postgres_schema.migrate(self.conn)
            found = self.conn.execute("SELECT current_schema()").fetchone()
            if found is not None and found[0] not in (None, "public"):
                self.where += f" (schema {found[0]})"
            self._booleans: dict[str, set[str]] = {}
            for table, column in self.conn.execute(_BOOLEANS):
                self._booleans.setdefault(table, set()).add(column)
        except psycopg.Error as exc:
            self.conn.close()
            raise StoreError(f"cannot open {self.where}: {exc}") from exc
        except BaseException:
            self.conn.close()
            raise

    def version(self) -> int:
        found = self.conn.execute("SELECT to_regclass('schema_version')").fetchone()
        if found is None or found[0] is None:
            return 0
        row = self.conn.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def begin_read(self) -> None:
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")  # one snapshot

    def rows(self, table: Copied) -> Generator[Sequence[Any], None, None]:
        with self.conn.cursor(name=f"corral_copy_{table.name}") as cur:
            cur.execute(
                f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {table.order}"
            )
            while batch := cur.fetchmany(BATCH):
                yield from batch

    def high_water(self) -> dict[str, int]:
        marks: dict[str, int] = {}
        for table, _, sequence in self.conn.execute(_IDENTITIES).fetchall():
            row = self.conn.execute("SELECT pg_sequence_last_value(%s)", (sequence,)).fetchone()
            if row is not None and row[0] is not None:
                marks[table] = max(marks.get(table, 0), int(row[0]))
        return marks

    def begin_write(self) -> None:
        self.conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        # No other process writes these tables until the commit; reads go on.
        self.conn.execute(f"LOCK TABLE {', '.join(t.name for t in TABLES)} IN EXCLUSIVE MODE")

    def occupied(self) -> list[str]:
        return [
            t.name
            for t in TABLES
            if (row := self.conn.execute(f"SELECT EXISTS (SELECT 1 FROM {t.name})").fetchone())
            and row[0]
        ]

    def insert_sql(self, table: Copied) -> str:
        # The identity columns (GENERATED ALWAYS) take the copied ids.
        marks = ", ".join([self.mark] * len(table.columns))
        return (
            f"INSERT INTO {table.name} ({', '.join(table.columns)})"
            f" OVERRIDING SYSTEM VALUE VALUES ({marks})"
        )

    def insert(self, table: Copied, rows: list[Sequence[Any]]) -> None:
        booleans = self._booleans.get(table.name, set())
        flags = [i for i, column in enumerate(table.columns) if column in booleans]
        if flags:  # SQLite keeps booleans as 0 and 1
            rows = [_as_bool(row, flags) for row in rows]
        with self.conn.cursor() as cur:
            cur.executemany(self.insert_sql(table), rows)

    def set_sequences(self, high_water: dict[str, int]) -> dict[str, int]:
        nexts: dict[str, int] = {}
        for table, column, sequence in self.conn.execute(_IDENTITIES).fetchall():
            row = self.conn.execute(f"SELECT COALESCE(MAX({column}), 0) FROM {table}").fetchone()
            last = max(int(row[0]) if row else 0, high_water.get(table, 0))
            # is_called = false: the next nextval() returns exactly last + 1.
            self.conn.execute("SELECT setval(%s, %s, false)", (sequence, last + 1))
            nexts[f"{table}.{column}"] = last + 1
        return nexts

    def count(self, table: str) -> int:
        row = self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if (
            self.conn.closed
            or self.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        ):
            return
        with contextlib.suppress(psycopg.Error):  # gone: the server rolls back on its own
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


def _first_line(exc: Exception) -> str:
    """A driver's error without its DETAIL lines, which quote the row (a run's values)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _as_bool(row: Sequence[Any], flags: list[int]) -> list[Any]:
    values = list(row)
    for i in flags:
        if values[i] is not None:
            values[i] = bool(values[i])
    return values


def _open(url: str, *, create: bool) -> _End:
    """The database a store URL names; refuses what a copy cannot use."""
    if url.startswith(_SQLITE_PREFIX) and len(url) > len(_SQLITE_PREFIX):
        return _SQLiteEnd(url.removeprefix(_SQLITE_PREFIX), create=create)
    if url.startswith(_POSTGRES_SCHEMES):
        return _PostgresEnd(url, create=create)
    if url == "sqlite://:memory:":
        raise ValueError(
            "sqlite://:memory: is gone with its process: copy from or to a file"
            " (sqlite:///path.db) or a PostgreSQL database"
        )
    raise ValueError(
        f"unsupported store URL {_shown(url)!r}: use sqlite:///relative/path.db,"
        " sqlite:////absolute/path.db or postgresql://user@host:port/dbname"
    )


def _shown(url: str) -> str:
    """A URL for a message, its password (if it has one) as ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _check_source_version(source: _End) -> None:
    latest = len(
        sqlite_schema.MIGRATIONS if isinstance(source, _SQLiteEnd) else postgres_schema.MIGRATIONS
    )
    current = source.version()
    if current > latest:
        raise SchemaVersionError(
            f"{source.where} has schema version {current}, newer than the {latest} this Corral"
            " knows: copy it with the Corral that wrote it, or upgrade this one"
        )
    if current < latest:
        how = (
            "open it with this Corral first (any verb, or `corral migrate` with a policy"
            " naming it, migrates a SQLite file)"
            if isinstance(source, _SQLiteEnd)
            else "run `corral migrate` with a policy naming it first"
        )
        raise SchemaVersionError(
            f"{source.where} has schema version {current}, this Corral needs {latest}: {how},"
            " then copy it"
        )


def copy_store(from_url: str, to_url: str) -> CopyReport:
    """Copy every record of the store `from_url` names into the empty store `to_url`
    names (created and migrated if need be), in one transaction of the destination.

    ValueError for a URL that names no store a copy can use; StoreError when a store
    cannot be reached or a write fails (then nothing was copied); SchemaVersionError when
    the source is not at this Corral's schema version; CopyRefused when the destination
    holds records already.
    """
    source = _open(from_url, create=False)
    try:
        try:
            _check_source_version(source)
        except (sqlite3.Error, psycopg.Error) as exc:
            raise StoreError(f"cannot read {source.where}: {_first_line(exc)}") from exc
        destination = _open(to_url, create=True)
        try:
            copied, sequences = _copy(source, destination)
            try:
                counted = {t.name: destination.count(t.name) for t in TABLES}
            except (sqlite3.Error, psycopg.Error) as exc:
                raise StoreError(
                    f"the copy to {destination.where} was committed, but counting its rows"
                    f" afterwards failed: {_first_line(exc)}"
                ) from exc
            return CopyReport(source.where, destination.where, copied, counted, sequences)
        finally:
            destination.close()
    finally:
        source.close()


def _copy(source: _End, destination: _End) -> tuple[dict[str, int], dict[str, int]]:
    """Rows copied per table, and the next id of each sequence; committed, or nothing."""
    copied: dict[str, int] = {}
    try:
        source.begin_read()
        destination.begin_write()
        occupied = destination.occupied()
        if occupied:
            raise CopyRefused(
                f"{destination.where} already holds records (in {', '.join(occupied)}): a copy"
                " goes into an empty store only and does not merge; nothing was copied"
            )
        for table in TABLES:
            copied[table.name] = 0
            batch: list[Sequence[Any]] = []
            try:
                # closing: a failed write ends the read (a server-side cursor) at once.
                with contextlib.closing(source.rows(table)) as rows:
                    for row in rows:
                        batch.append(row)
                        if len(batch) == BATCH:
                            destination.insert(table, batch)
                            copied[table.name] += len(batch)
                            batch = []
                if batch:
                    destination.insert(table, batch)
                    copied[table.name] += len(batch)
            except (sqlite3.Error, psycopg.Error) as exc:
                raise StoreError(
                    f"copying {table.name} from {source.where} to {destination.where} failed:"
                    f" {_first_line(exc)}; nothing was copied"
                ) from exc
        sequences = destination.set_sequences(source.high_water())
        in_transaction = {t.name: destination.count(t.name) for t in TABLES}
        if in_transaction != copied:
            raise StoreError(
                f"{destination.where} counted {in_transaction} after the copy, {copied} were"
                " read: nothing was copied"
            )
        destination.commit()
    except (sqlite3.Error, psycopg.Error) as exc:
        destination.rollback()
        raise StoreError(
            f"copy to {destination.where} failed: {_first_line(exc)}; nothing was copied"
        ) from exc
    except BaseException:
        destination.rollback()
        raise
    finally:
        with contextlib.suppress(sqlite3.Error, psycopg.Error):  # only a read to end
            source.rollback()
    return copied, sequences
