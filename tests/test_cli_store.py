"""`corral migrate` on PostgreSQL, `corral serve` refusing a schema that is behind, and
`corral store copy` moving an installation."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import Result

from corral.cli import app
from corral.state import SchemaVersionError, SQLiteStore, open_store
from corral.state.postgres import describe
from corral.state.sealed import DATA_KEY_ENV, new_data_key
from corral.state.sqlite_schema import MIGRATIONS
from tests.state.conftest import FakeClock, postgres_admin
from tests.state.test_copy import populate
from tests.support import corral, example_policy, flat, on_store, runner


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


# corral store copy


def copy(*args: str) -> Result:
    return runner.invoke(app, ["store", "copy", *args])


def test_store_copy_moves_an_installation_to_postgresql(
    tmp_path: Path, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    monkeypatch.setenv(DATA_KEY_ENV, new_data_key())
    source = example_policy(tmp_path)  # sealed: the example redacts storage
    on_store(source, lambda store: populate(store, FakeClock()))
    (tmp_path / "dest").mkdir()
    dest = example_policy(tmp_path / "dest", {f"sqlite:///{tmp_path}/dest/corral.db": database})

    result = copy("--from", f"sqlite:///{tmp_path}/corral.db", "--to", database)
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert re.search(r"runs 2 2 .* audit 6 6 audit_head 1 1", text), text
    assert "checkpoints.id 3," in text
    assert f"use {describe(database)} with the same CORRAL_DATA_KEY" in text
    assert "22 rows copied; counts verified." in text

    verified = corral(dest, "audit", "verify")
    assert verified.exit_code == 0, verified.output
    assert "audit chain intact: 6 entries" in verified.output
    shown = corral(dest, "runs", "show", "run-a")  # sealed values open with the same key
    assert shown.exit_code == 0, shown.output

    again = copy("--from", f"sqlite:///{tmp_path}/corral.db", "--to", database, "--json")
    assert again.exit_code == 2
    assert f"{describe(database)} already holds records (in runs," in flat(again.output)
    assert "nothing was copied" in flat(again.output)
    assert "audit chain intact: 6 entries" in corral(dest, "audit", "verify").output


def test_store_copy_to_a_sqlite_backup_as_json(tmp_path: Path) -> None:
    source = SQLiteStore(tmp_path / "corral.db")
    asyncio.run(populate(source, FakeClock()))
    asyncio.run(source.close())
    result = copy(
        "--from", f"sqlite:///{tmp_path}/corral.db", "--to", f"sqlite:///{tmp_path}/b.db", "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["verified"] is True
    assert report["copied"] == report["counted"]
    assert report["copied"]["steps"] == 2
    assert report["sequences"] == {"checkpoints.id": 3, "dead_letters.id": 2}


GONE = "postgresql://u:secret@127.0.0.1:9/gone"


@pytest.mark.parametrize(
    ("source", "destination", "message"),
    [
        ("ftp://host/x", "sqlite:///{tmp}/b.db", "unsupported store URL 'ftp://host/x'"),
        (
            "sqlite:///{tmp}/nothing.db",
            "sqlite:///{tmp}/b.db",
            "cannot open {tmp}/nothing.db: no such file",
        ),
        ("sqlite:///{tmp}/corral.db", GONE, "cannot open postgresql://127.0.0.1:9/gone"),
        (GONE, "sqlite:///{tmp}/b.db", "cannot open postgresql://127.0.0.1:9/gone"),
    ],
)
def test_store_copy_names_what_it_cannot_use(
    tmp_path: Path, source: str, destination: str, message: str
) -> None:
    asyncio.run(SQLiteStore(tmp_path / "corral.db").close())
    result = copy("--from", source.format(tmp=tmp_path), "--to", destination.format(tmp=tmp_path))
    assert result.exit_code == 2, result.output
    assert message.format(tmp=tmp_path) in flat(result.output)
    assert "secret" not in result.output
    assert not (tmp_path / "b.db").exists()


def test_store_copy_refuses_a_source_behind_this_corral(tmp_path: Path, database: str) -> None:
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.executescript(MIGRATIONS[0])
        conn.execute("PRAGMA user_version = 1")
    result = copy("--from", f"sqlite:///{tmp_path}/old.db", "--to", database)
    assert result.exit_code == 2
    assert f"{tmp_path}/old.db has schema version 1, this Corral needs" in flat(result.output)
    assert "open it with this Corral first" in flat(result.output)
