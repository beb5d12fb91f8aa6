"""The fleet the graph and report tests read: a store seeded with three agents' runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.state.sqlite import SQLiteStore

from .test_graph import seed_fleet


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "corral.db")
    await seed_fleet(store)
    yield store
    await store.close()
