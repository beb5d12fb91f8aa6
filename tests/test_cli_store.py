"""`corral migrate` on PostgreSQL, and `corral serve` refusing a schema that is behind."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.state import SchemaVersionError, open_store
from tests.state.conftest import postgres_admin
from tests.support import corral, example_policy, flat


@pytest.fixture
def database() -> Iterator[str]:
    name = f"corral_cli_{uuid.uuid4().hex}"
    with postgres_admin() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with postgres_admin() as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def policy(tmp_path: Path, database: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    return example_policy(tmp_path, {f"sqlite:///{tmp_path}/corral.db": database})


def test_serve_refuses_a_schema_that_is_behind_until_migrate_runs(
    policy: Path, database: str
) -> None:
    with pytest.raises(SchemaVersionError, match="run `corral migrate`"):
        open_store(database, migrate=False)
    refused = corral(policy, "serve", "--port", "0")
    assert refused.exit_code == 2
    assert "has schema version 0, this Corral needs" in flat(refused.output)
    assert "corral migrate" in flat(refused.output)

    migrated = corral(policy, "migrate")
    assert migrated.exit_code == 0, migrated.output
    assert "migrated to the latest schema" in migrated.output
    again = corral(policy, "migrate")  # once is enough: nothing more to apply
    assert again.exit_code == 0, again.output

    async def read() -> list[object]:
        store = open_store(database, migrate=False)  # now it opens as serve opens it
        try:
            return list(await store.list_runs())
        finally:
            await store.close()

    assert asyncio.run(read()) == []


def test_migrate_names_a_store_it_cannot_reach(tmp_path: Path) -> None:
    policy = example_policy(
        tmp_path,
        {f"sqlite:///{tmp_path}/corral.db": "postgresql://postgres@127.0.0.1:9/nowhere"},
    )
    result = corral(policy, "migrate")
    assert result.exit_code == 2
    assert "cannot open postgresql://127.0.0.1:9/nowhere" in flat(result.output)
