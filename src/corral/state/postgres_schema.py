"""The PostgreSQL store's schema: versioned migrations, applied once per database, in order.

The versions are SQLite's (sqlite_schema.MIGRATIONS): version N of either store has the
same tables, columns and constraints, in PostgreSQL's types. JSON columns are TEXT holding
orjson's encoding, as in SQLite, so a record reads back exactly as written. Tables whose
insertion order a read uses (SQLite's implicit rowid) have a `rowid` identity column.
The table schema_version holds how many scripts have run.

Every migration runs in its own transaction holding a transaction-level advisory lock
(MIGRATE_LOCK, per schema), and re-reads the version under it: of several processes
opening a new database at once, one applies each script and the others see it applied.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from corral.state.store import SchemaVersionError

# The advisory locks' first key; the second is hashtext(current_schema()), so that stores
# in different schemas of one database do not wait for each other.
MIGRATE_LOCK = 0x436F7201
AUDIT_LOCK = 0x436F7202
LOCK_SQL = "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))"

# Append, never edit: databases in the field were migrated by the scripts as they are.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE runs (
        rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id TEXT PRIMARY KEY,
        agent TEXT NOT NULL,
        agent_type TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        task TEXT,
        session TEXT,
        status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'halted')),
        halt_reason TEXT,
        ended_at DOUBLE PRECISION,
        trace_id TEXT,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cost_usd DOUBLE PRECISION NOT NULL,
        steps BIGINT NOT NULL,
        tool_calls BIGINT NOT NULL,
        outcome TEXT,
        error TEXT,
        kill_requested_at DOUBLE PRECISION,
        time_to_safe_fail_ms DOUBLE PRECISION,
        last_checkpoint_id BIGINT,
        parent_run_id TEXT REFERENCES runs (id)
    );
    CREATE INDEX runs_by_created ON runs (created_at, rowid);
    CREATE INDEX runs_by_status ON runs (status, created_at);
    CREATE INDEX runs_by_agent ON runs (agent, created_at);

    CREATE TABLE steps (
        run_id TEXT NOT NULL REFERENCES runs (id),
        seq BIGINT NOT NULL CHECK (seq >= 1),
        kind TEXT NOT NULL CHECK (kind IN ('llm', 'tool')),
        name TEXT NOT NULL,
        input TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        ended_at DOUBLE PRECISION NOT NULL,
        output TEXT,
        status TEXT NOT NULL CHECK (status IN ('ok', 'error', 'halted', 'replayed')),
        error TEXT,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cost_usd DOUBLE PRECISION NOT NULL,
        idempotency_key TEXT,
        model_used TEXT,
        PRIMARY KEY (run_id, seq)
    );

    -- Identity ids only grow: save_run relies on it to keep the latest.
    CREATE TABLE checkpoints (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id),
        step BIGINT NOT NULL,
        state TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX checkpoints_by_run ON checkpoints (run_id, id);

    CREATE TABLE dead_letters (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id),
        reason TEXT NOT NULL,
        packet TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'retried', 'dropped')),
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX dead_letters_by_status ON dead_letters (status, id);

    CREATE TABLE approvals (
        rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id),
        step BIGINT NOT NULL,
        tool TEXT NOT NULL,
        args TEXT NOT NULL,
        rule TEXT NOT NULL,
        requested_at DOUBLE PRECISION NOT NULL,
        timeout_at DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('pending', 'approved', 'rejected', 'timeout')),
        decided_at DOUBLE PRECISION,
        decided_by TEXT,
        note TEXT
    );
    CREATE INDEX approvals_by_status ON approvals (status, requested_at);

    CREATE TABLE idempotency (
        key TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id),
        result TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );

    CREATE TABLE artifacts (
        handle TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id),
        content BYTEA NOT NULL,
        media_type TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );

    CREATE TABLE agent_keys (
        rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        agent TEXT,
        admin BOOLEAN NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION,
        revoked_at DOUBLE PRECISION,
        CHECK (admin OR agent IS NOT NULL)
    );

    -- pos, not seq, is the insertion order, so an edited seq shows up as a broken chain.
    -- run_id has no foreign key: the log outlives anything else and records events
    -- (key changes, policy reloads) that belong to no run.
    CREATE TABLE audit (
        pos BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        seq BIGINT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        kind TEXT NOT NULL,
        run_id TEXT,
        payload TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL
    );
    """,
    """
    ALTER TABLE runs ADD COLUMN topup TEXT;

    -- kill_requests is polled several times a second: this index holds only runs ever
    -- asked to be killed and covers the query.
    CREATE INDEX runs_kill_requested ON runs (status, id, kill_requested_at)
        WHERE kill_requested_at IS NOT NULL;

    CREATE INDEX dead_letters_by_run ON dead_letters (run_id, id);
    """,
    """
    -- Which process serves a run, and whether anyone will resume it (see RunRecord).
    ALTER TABLE runs ADD COLUMN owner TEXT;
    ALTER TABLE runs ADD COLUMN oneshot BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE INDEX runs_by_owner ON runs (owner) WHERE status = 'running';
    -- Budget counters are rebuilt from the runs of a session.
    CREATE INDEX runs_by_session ON runs (session, created_at, rowid)
        WHERE session IS NOT NULL;

    -- Steps gain the status 'interrupted'.
    ALTER TABLE steps DROP CONSTRAINT steps_status_check;
    ALTER TABLE steps ADD CONSTRAINT steps_status_check
        CHECK (status IN ('ok', 'error', 'halted', 'replayed', 'interrupted'));
    -- Budget counters of fleet and global windows are rebuilt from the steps in them.
    CREATE INDEX steps_by_started ON steps (started_at);

    -- Write-ahead records of calls on their way upstream (InflightRecord).
    CREATE TABLE inflight (
        rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id),
        owner TEXT NOT NULL,
        seq BIGINT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('llm', 'tool')),
        name TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cost_usd DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX inflight_by_run ON inflight (run_id, rowid);

    CREATE TABLE leases (
        owner TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid BIGINT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        heartbeat_at DOUBLE PRECISION NOT NULL
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
    ALTER TABLE approvals ADD COLUMN escalations BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE approvals ADD COLUMN panel TEXT;
    ALTER TABLE approvals ADD COLUMN answer TEXT;
    CREATE INDEX approvals_by_call ON approvals (call_key) WHERE call_key IS NOT NULL;
    CREATE INDEX approvals_by_request ON approvals (request_key)
        WHERE request_key IS NOT NULL;
    ALTER TABLE runs ADD COLUMN waiting_s DOUBLE PRECISION NOT NULL DEFAULT 0;

    CREATE TABLE proposals (
        rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id),
        agent TEXT NOT NULL,
        tool TEXT NOT NULL,
        args TEXT NOT NULL,
        scope TEXT NOT NULL,
        proposed_at DOUBLE PRECISION NOT NULL,
        result TEXT,
        verdict TEXT CHECK (verdict IN ('agree', 'disagree')),
        reviewed_by TEXT,
        reviewed_at DOUBLE PRECISION,
        note TEXT
    );
    CREATE INDEX proposals_by_agent ON proposals (agent, proposed_at);
    """,
    # 5: the span id of a run's first trace (later traces of the run link to it).
    """
    ALTER TABLE runs ADD COLUMN trace_span TEXT;
    """,
)

_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);"
    " INSERT INTO schema_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING"
)


def migrate(
    conn: psycopg.Connection[tuple[object, ...]], migrations: Sequence[str] = MIGRATIONS
) -> int:
    """Bring the database (the schema first on the connection's search_path) to the latest
    version and return that version. `conn` is in autocommit mode; each script runs in a
    transaction of its own, holding MIGRATE_LOCK and re-reading the version first."""
    latest = len(migrations)
    with conn.transaction():
        conn.execute(LOCK_SQL, (MIGRATE_LOCK,))
        conn.execute(_VERSION_TABLE)
    current = _version(conn)
    _check_not_newer(conn, current, latest)
    for version, script in enumerate(migrations[current:], start=current + 1):
        with conn.transaction():
            conn.execute(LOCK_SQL, (MIGRATE_LOCK,))
            # Another process may have migrated while this one waited for the lock.
            current = _version(conn)
            _check_not_newer(conn, current, latest)
            if current >= version:
                continue
            conn.execute(script.encode())
            conn.execute("UPDATE schema_version SET version = %s WHERE id = 1", (version,))
    return latest


def check_migrated(
    conn: psycopg.Connection[tuple[object, ...]], migrations: Sequence[str] = MIGRATIONS
) -> int:
    """The schema's version if it is the latest; SchemaVersionError naming `corral migrate`
    if it is behind (or empty), or if it is newer than this Corral."""
    latest = len(migrations)
    found = conn.execute("SELECT to_regclass('schema_version')").fetchone()
    current = _version(conn) if found is not None and found[0] is not None else 0
    _check_not_newer(conn, current, latest)
    if current < latest:
        info = conn.info
        raise SchemaVersionError(
            f"postgresql://{info.host}:{info.port}/{info.dbname} has schema version {current},"
            f" this Corral needs {latest}: run `corral migrate` (with the same --policy)"
            " first; serve does not change a shared database's schema on its own"
        )
    return current


def _version(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
    assert row is not None  # inserted with the table
    version = row[0]
    assert isinstance(version, int)
    return version


def _check_not_newer(
    conn: psycopg.Connection[tuple[object, ...]], current: int, latest: int
) -> None:
    if current > latest:
        info = conn.info
        where = f"postgresql://{info.host}:{info.port}/{info.dbname}"
        schema = conn.execute("SELECT current_schema()").fetchone()
        raise SchemaVersionError(
            f"{where} (schema {schema[0] if schema else '?'}) has schema version {current},"
            f" newer than the {latest} this Corral knows: upgrade Corral to open it"
        )
