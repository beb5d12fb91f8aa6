"""The SQLite store's schema: versioned migrations, applied once per file, in order."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from corral.state.store import SchemaVersionError

# Each script moves the schema one version up and runs in its own transaction;
# PRAGMA user_version records how many have run. Append, never edit: files in the
# field were migrated by the scripts as they are.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        agent TEXT NOT NULL,
        agent_type TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        task TEXT,
        session TEXT,
        status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'halted')),
        halt_reason TEXT,
        ended_at REAL,
        trace_id TEXT,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        steps INTEGER NOT NULL,
        tool_calls INTEGER NOT NULL,
        outcome TEXT,
        error TEXT,
        kill_requested_at REAL,
        time_to_safe_fail_ms REAL,
        last_checkpoint_id INTEGER,
        parent_run_id TEXT REFERENCES runs (id)
    );
    CREATE INDEX runs_by_created ON runs (created_at);
    CREATE INDEX runs_by_status ON runs (status, created_at);
    CREATE INDEX runs_by_agent ON runs (agent, created_at);

    CREATE TABLE steps (
        run_id TEXT NOT NULL REFERENCES runs (id),
        seq INTEGER NOT NULL CHECK (seq >= 1),
        kind TEXT NOT NULL CHECK (kind IN ('llm', 'tool')),
        name TEXT NOT NULL,
        input TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL NOT NULL,
        output TEXT,
        status TEXT NOT NULL CHECK (status IN ('ok', 'error', 'halted', 'replayed')),
        error TEXT,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        idempotency_key TEXT,
        model_used TEXT,
        PRIMARY KEY (run_id, seq)
    );

    -- AUTOINCREMENT so that ids only grow: save_run relies on it to keep the latest.
    CREATE TABLE checkpoints (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL REFERENCES runs (id),
        step INTEGER NOT NULL,
        state TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX checkpoints_by_run ON checkpoints (run_id, id);

    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL REFERENCES runs (id),
        reason TEXT NOT NULL,
        packet TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'retried', 'dropped')),
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX dead_letters_by_status ON dead_letters (status, id);

    CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id),
        step INTEGER NOT NULL,
        tool TEXT NOT NULL,
        args TEXT NOT NULL,
        rule TEXT NOT NULL,
        requested_at REAL NOT NULL,
        timeout_at REAL NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('pending', 'approved', 'rejected', 'timeout')),
        decided_at REAL,
        decided_by TEXT,
        note TEXT
    );
    CREATE INDEX approvals_by_status ON approvals (status, requested_at);

    CREATE TABLE idempotency (
        key TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id),
        result TEXT NOT NULL,
        created_at REAL NOT NULL
    );

    CREATE TABLE artifacts (
        handle TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id),
        content BLOB NOT NULL,
        media_type TEXT NOT NULL,
        created_at REAL NOT NULL
    );

    CREATE TABLE agent_keys (
        id TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        agent TEXT,
        admin INTEGER NOT NULL CHECK (admin IN (0, 1)),
        created_at REAL NOT NULL,
        expires_at REAL,
        revoked_at REAL,
        CHECK (admin = 1 OR agent IS NOT NULL)
    );

    -- pos, not seq, is the insertion order, so an edited seq shows up as a broken chain.
    -- run_id has no foreign key: the log outlives anything else and records events
    -- (key changes, policy reloads) that belong to no run.
    CREATE TABLE audit (
        pos INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        run_id TEXT,
        payload TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL
    );
    """,
    """
    ALTER TABLE runs ADD COLUMN topup TEXT;

    -- kill_requests is polled several times a second. This index holds only runs ever
    -- asked to be killed and covers the query, so the poll reads neither the table nor
    -- the runs nobody killed.
    CREATE INDEX runs_kill_requested ON runs (status, id, kill_requested_at)
        WHERE kill_requested_at IS NOT NULL;

    CREATE INDEX dead_letters_by_run ON dead_letters (run_id, id);
    """,
    """
    -- Which process serves a run, and whether anyone will resume it (see RunRecord).
    ALTER TABLE runs ADD COLUMN owner TEXT;
    ALTER TABLE runs ADD COLUMN oneshot INTEGER NOT NULL DEFAULT 0 CHECK (oneshot IN (0, 1));
    CREATE INDEX runs_by_owner ON runs (owner) WHERE status = 'running';
    -- Budget counters are rebuilt from the runs of a session.
    CREATE INDEX runs_by_session ON runs (session) WHERE session IS NOT NULL;

    -- Steps gain the status 'interrupted'; SQLite changes a CHECK only by a new table.
    CREATE TABLE steps_v3 (
        run_id TEXT NOT NULL REFERENCES runs (id),
        seq INTEGER NOT NULL CHECK (seq >= 1),
        kind TEXT NOT NULL CHECK (kind IN ('llm', 'tool')),
        name TEXT NOT NULL,
        input TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL NOT NULL,
        output TEXT,
        status TEXT NOT NULL
            CHECK (status IN ('ok', 'error', 'halted', 'replayed', 'interrupted')),
        error TEXT,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        idempotency_key TEXT,
        model_used TEXT,
        PRIMARY KEY (run_id, seq)
    );
    INSERT INTO steps_v3 SELECT * FROM steps;
    DROP TABLE steps;
    ALTER TABLE steps_v3 RENAME TO steps;
    -- Budget counters of fleet and global windows are rebuilt from the steps in them.
    CREATE INDEX steps_by_started ON steps (started_at);

    -- Write-ahead records of calls on their way upstream (InflightRecord).
    CREATE TABLE inflight (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id),
        owner TEXT NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('llm', 'tool')),
        name TEXT NOT NULL,
        started_at REAL NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL
    );
    CREATE INDEX inflight_by_run ON inflight (run_id);

    CREATE TABLE leases (
        owner TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL
    );
    """,
    # 4: approvals bound to their arguments and found again by call or request; shadow
    # proposals; the time runs waited for humans.
    """
    ALTER TABLE approvals ADD COLUMN agent TEXT NOT NULL DEFAULT '';
    ALTER TABLE approvals ADD COLUMN call_key TEXT;
    ALTER TABLE approvals ADD COLUMN request_key TEXT;
    ALTER TABLE approvals ADD COLUMN args_hash TEXT NOT NULL DEFAULT '';
    ALTER TABLE approvals ADD COLUMN approved_args TEXT;
    ALTER TABLE approvals ADD COLUMN escalations INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE approvals ADD COLUMN panel TEXT;
    ALTER TABLE approvals ADD COLUMN answer TEXT;
    CREATE INDEX approvals_by_call ON approvals (call_key) WHERE call_key IS NOT NULL;
    CREATE INDEX approvals_by_request ON approvals (request_key)
        WHERE request_key IS NOT NULL;
    ALTER TABLE runs ADD COLUMN waiting_s REAL NOT NULL DEFAULT 0;

    CREATE TABLE proposals (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id),
        agent TEXT NOT NULL,
        tool TEXT NOT NULL,
        args TEXT NOT NULL,
        scope TEXT NOT NULL,
        proposed_at REAL NOT NULL,
        result TEXT,
        verdict TEXT CHECK (verdict IN ('agree', 'disagree')),
        reviewed_by TEXT,
        reviewed_at REAL,
        note TEXT
    );
    CREATE INDEX proposals_by_agent ON proposals (agent, proposed_at);
    """,
    # 5: the span id of a run's first trace (later traces of the run link to it).
    """
    ALTER TABLE runs ADD COLUMN trace_span TEXT;
    """,
)


def migrate(conn: sqlite3.Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the database to the latest schema version and return that version.

    Each migration runs in its own transaction that re-reads the version first, so
    two processes opening a new file at once apply each script exactly once.
    """
    latest = len(migrations)
    current = _user_version(conn)
    _check_not_newer(conn, current, latest)
    for version, script in enumerate(migrations[current:], start=current + 1):
        with transaction(conn):
            # Another process may have migrated while this one waited for the lock.
            current = _user_version(conn)
            _check_not_newer(conn, current, latest)
            if current >= version:
                continue
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
    return latest


def _user_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def _check_not_newer(conn: sqlite3.Connection, current: int, latest: int) -> None:
    if current > latest:
        where = conn.execute("PRAGMA database_list").fetchone()[2] or ":memory:"
        raise SchemaVersionError(
            f"{where} has schema version {current}, newer than the {latest} this Corral "
            "knows: upgrade Corral to open it"
        )


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements; executescript would commit our transaction."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip():
        raise ValueError(f"migration ends with an incomplete statement: {pending.strip()!r}")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front: a deferred transaction that reads and
    # then writes fails with SQLITE_BUSY at once, without waiting, if another
    # connection wrote in between.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
