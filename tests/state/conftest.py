"""Fixtures for the state layer: counters by implementation, a fresh store per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from corral.state import Counters, MemoryCounters, SQLiteStore, Store
from corral.state.postgres import PostgresStore

from . import redis_backend


class FakeClock:
    """A clock that moves only when told, so time-based tests never sleep."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# One factory per Counters implementation; the contract tests run against each. An
# implementation backed by a server brings its factories from a module of its own
# (tests/state/redis_backend.py).
COUNTER_FACTORIES: dict[str, Callable[[FakeClock], Counters]] = {
    "memory": lambda clock: MemoryCounters(clock=clock, wall_clock=clock),
    **redis_backend.COUNTER_FACTORIES,
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=list(COUNTER_FACTORIES))
async def counters(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Counters]:
    built = COUNTER_FACTORIES[request.param](clock)
    yield built
    await built.close()


# The Store implementations the contract tests run against. PostgreSQL is not optional:
# CI starts it, and a test that cannot reach it fails (a skip would hide a broken setup).
STORE_BACKENDS = ("sqlite", "postgresql")
POSTGRES_URL = os.environ.get(
    "CORRAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def postgres_admin() -> psycopg.Connection[tuple[Any, ...]]:
    """An autocommit connection to the test server; the test fails if there is none."""
    try:
        return psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc}\nThe store tests run on"
            " it: start it (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql)"
            " main start) or set CORRAL_TEST_POSTGRES_URL",
            pytrace=False,
        )


def schema_url(schema: str) -> str:
    """The test server's URL with `schema` first on the search path: a store of its own."""
    return make_conninfo(POSTGRES_URL, options=f"-csearch_path={schema}")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty schema for one test, dropped after it."""
    schema = f"corral_test_{uuid.uuid4().hex}"
    with postgres_admin() as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield schema_url(schema)
    with postgres_admin() as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=STORE_BACKENDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = SQLiteStore(tmp_path / "corral.db", clock=clock)
    else:
        opened = PostgresStore(request.getfixturevalue("postgres_url"), clock=clock)
    yield opened
    await opened.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
    """For what only SQLite has: its file, its pragmas, its query plans."""
    opened = SQLiteStore(tmp_path / "corral.db", clock=clock)
    yield opened
    await opened.close()
