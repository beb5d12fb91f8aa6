"""The state layer: durable records (Store) and hot atomic counters (Counters).

`open_store` and `open_counters` build them from the policy's `store` and
`counters` URLs.
"""

from corral.state.counters import (
    Counters,
    CountersUnavailable,
    CounterValue,
    Hold,
    Refusal,
    Reservation,
)
from corral.state.memory import MemoryCounters
from corral.state.postgres import PostgresStore
from corral.state.records import (
    AgentKeyRecord,
    ApprovalRecord,
    ApprovalStatus,
    ArtifactRecord,
    AuditEntry,
    CheckpointRecord,
    DeadLetterRecord,
    DeadLetterStatus,
    IdempotencyRecord,
    InflightRecord,
    Json,
    LeaseRecord,
    ProposalRecord,
    RunRecord,
    Spending,
    StepKind,
    StepRecord,
    StepStatus,
    Verdict,
)
from corral.state.sqlite import SQLiteStore
from corral.state.store import (
    ConstraintError,
    NotFoundError,
    SchemaVersionError,
    Store,
    StoreError,
)

__all__ = [
    "AgentKeyRecord",
    "ApprovalRecord",
    "ApprovalStatus",
    "ArtifactRecord",
    "AuditEntry",
    "CheckpointRecord",
    "ConstraintError",
    "CounterValue",
    "Counters",
    "CountersUnavailable",
    "DeadLetterRecord",
    "DeadLetterStatus",
    "Hold",
    "IdempotencyRecord",
    "InflightRecord",
    "Json",
    "LeaseRecord",
    "MemoryCounters",
    "NotFoundError",
    "PostgresStore",
    "ProposalRecord",
    "Refusal",
    "Reservation",
    "RunRecord",
    "SQLiteStore",
    "SchemaVersionError",
    "Spending",
    "StepKind",
    "StepRecord",
    "StepStatus",
    "Store",
    "StoreError",
    "Verdict",
    "open_counters",
    "open_store",
]

_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open the store a URL names, creating and migrating it if needed (with
    `migrate=False` a PostgreSQL schema that is behind is refused instead: a database
    several nodes share is migrated on purpose, by `corral migrate`).

    sqlite:///relative/path.db, sqlite:////absolute/path.db, or sqlite://:memory:
    (one connection, gone on close: for tests and throwaway runs); or a PostgreSQL URL,
    postgresql://user:password@host:port/dbname (postgres:// too; libpq's parameters, and
    pool_size, the connections this process holds: see PostgresStore.from_url).
    """
    if url == "sqlite://:memory:":
        return SQLiteStore(":memory:")
    if url.startswith(_SQLITE_PREFIX) and len(url) > len(_SQLITE_PREFIX):
        return SQLiteStore(url.removeprefix(_SQLITE_PREFIX))
    if url.startswith(_POSTGRES_SCHEMES):
        return PostgresStore.from_url(url, migrate=migrate)
    raise ValueError(
        f"unsupported store URL {url!r}: use sqlite:///relative/path.db,"
        " sqlite:////absolute/path.db, sqlite://:memory: or postgresql://host/dbname"
    )


def open_counters(url: str) -> Counters:
    """Build the counters a URL names: "memory" keeps them in this process;
    redis://host:port/db and rediss://host:port/db (TLS) share them through that Redis
    (nothing is connected until the first operation)."""
    if url == "memory":
        return MemoryCounters()
    if url.startswith(("redis://", "rediss://")) and len(url.split("://", 1)[1]) > 0:
        from corral.state.redis import RedisCounters

        return RedisCounters(url)
    raise ValueError(
        f"unsupported counters URL {url!r}: use 'memory', redis://host:port/db"
        " or rediss://host:port/db"
    )
