"""Fixtures for the state layer: counters by implementation, a fresh store per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from corral.state import Counters, MemoryCounters, SQLiteStore

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


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "corral.db", clock=clock)
    yield opened
    await opened.close()
