"""copy_store: a SQLite store, written through the Store API, moved into PostgreSQL (and
into another SQLite file) with every record, id, sequence and the audit chain kept."""

from __future__ import annotations

import dataclasses
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest

from corral.calls import RunStatus
from corral.state import (
    AgentKeyRecord,
    ApprovalRecord,
    ArtifactRecord,
    IdempotencyRecord,
    InflightRecord,
    LeaseRecord,
    PostgresStore,
    ProposalRecord,
    RunRecord,
    SchemaVersionError,
    SQLiteStore,
    StepRecord,
    Store,
    StoreError,
)
from corral.state.copy import BATCH, TABLES, CopyRefused, copy_store
from corral.state.sealed import SealedStore, new_data_key
from corral.state.sqlite_schema import MIGRATIONS
from corral.telemetry.audit import AuditLog

from .conftest import POSTGRES_URL, FakeClock, postgres_admin

T0 = 1_700_000_000.0


@pytest.fixture
def new_schema() -> Iterator[Callable[[], str]]:
    """Makes store URLs (as a policy names one) of fresh schemas, dropped after the test."""
    made: list[str] = []

    def make() -> str:
        schema = f"corral_copy_{uuid.uuid4().hex}"
        with postgres_admin() as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        made.append(schema)
        parts = urlsplit(POSTGRES_URL)
        query = urlencode([*parse_qsl(parts.query), ("options", f"-csearch_path={schema}")])
        return urlunsplit(parts._replace(query=query))

    yield make
    with postgres_admin() as conn:
        for schema in made:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def postgres_url(new_schema: Callable[[], str]) -> str:
    return new_schema()


async def populate(store: Store, clock: FakeClock) -> None:
    """One of every record, written as Corral writes them."""
    audit = AuditLog(store, clock)
    parent = RunRecord("run-a", "support", "chat", T0, T0, task="refund", session="s1")
    await store.create_run(parent)
    await audit.append("run.started", {"agent": "support"}, run_id="run-a")
    child = RunRecord("run-b", "support", "chat", T0 + 1, T0 + 1, parent_run_id="run-a")
    await store.create_run(child)
    for seq in (1, 2):
        clock.advance(1)
        parent = dataclasses.replace(
            parent, steps=seq, input_tokens=10 * seq, cost_usd=0.01 * seq, updated_at=clock()
        )
        step = StepRecord(
            "run-a", seq, "llm", "sim-1", {"messages": [seq]}, clock() - 1, clock(),
            output={"text": f"answer {seq}"}, input_tokens=10, cost_usd=0.01,
        )  # fmt: skip
        await store.record_step(parent, step, audit.seal("step", {"seq": seq}, "run-a"))
    await store.add_checkpoint("run-a", 1, {"memory": ["first"]})
    await store.add_checkpoint("run-a", 2, {"memory": ["first", "second"]})
    await store.begin_call(
        InflightRecord("call-1", "run-a", "owner-1", 3, "tool", "refund", clock(), 5, 5, 0.1)
    )
    await store.renew_lease(LeaseRecord("owner-1", "node-1", 4242, T0, clock()))
    halted = dataclasses.replace(
        child, status=RunStatus.HALTED, halt_reason="budget", ended_at=clock(), oneshot=True
    )
    await store.halt_run(halted, {"why": "over budget", "spent": 1.5})
    await audit.append("run.halted", {"reason": "budget"}, run_id="run-b")
    await store.add_approval(
        ApprovalRecord(
            "ap-1", "run-a", 2, "refund", {"amount": 30}, "refunds", clock(), clock() + 60,
            agent="support", call_key="tc-1", args_hash="h1", panel={"show": "all"},
        )
    )  # fmt: skip
    assert await store.decide_approval("ap-1", "approved", by="ana", at=clock(), note="fine")
    await audit.append("approval.decided", {"id": "ap-1"}, run_id="run-a")
    await store.add_proposal(
        ProposalRecord("pr-1", "run-a", "support", "email", {"to": "x"}, "write", clock())
    )
    assert await store.review_proposal("pr-1", "agree", by="ana", at=clock())
    await store.put_idempotent(IdempotencyRecord("idem-1", "run-a", {"ok": True}, clock()))
    await store.put_artifact(
        ArtifactRecord("art-1", "run-a", b"\x00\x01binary\xff", "application/octet-stream", T0)
    )
    await store.add_agent_key(AgentKeyRecord("key-1", "hash-1", "ck_1", "support", False, T0))
    await store.add_agent_key(AgentKeyRecord("key-2", "hash-2", "ck_2", None, True, T0))
    await audit.append("key.issued", {"id": "key-2"})


async def snapshot(store: Store) -> dict[str, Any]:
    """Every record, read through the Store API."""
    runs = sorted(await store.list_runs(), key=lambda run: run.id)
    dead = await store.list_dead_letters()
    return {
        "runs": runs,
        "steps": {run.id: await store.list_steps(run.id) for run in runs},
        "checkpoints": [await store.get_checkpoint(i) for i in range(1, 4)],
        "last_checkpoint": await store.last_checkpoint("run-a"),
        "dead_letters": dead,
        "dead_letter_for": await store.dead_letter_for_run("run-b"),
        "approvals": await store.list_approvals(),
        "approval": await store.get_approval("ap-1"),
        "proposals": await store.list_proposals(),
        "idempotent": await store.get_idempotent("idem-1"),
        "artifact": await store.get_artifact("art-1"),
        "keys": await store.list_agent_keys(),
        "key": await store.find_agent_key("hash-2"),
        "inflight": await store.inflight("run-a"),
        "leases": await store.list_leases(),
        "kills": await store.kill_requests(),
        "audit": await store.list_audit(),
        "head": await store.audit_head(),
    }


@pytest.fixture
async def source(tmp_path: Path, clock: FakeClock) -> tuple[str, dict[str, Any]]:
    store = SQLiteStore(tmp_path / "corral.db", clock=clock)
    try:
        await populate(store, clock)
        return f"sqlite:///{tmp_path / 'corral.db'}", await snapshot(store)
    finally:
        await store.close()


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        found = {}
        for table in TABLES:
            row = conn.execute(f"SELECT count(*) FROM {table.name}").fetchone()
            assert row is not None
            found[table.name] = int(row[0])
        return found


async def test_a_sqlite_store_moves_to_postgresql_whole(
    source: tuple[str, dict[str, Any]], postgres_url: str, clock: FakeClock
) -> None:
    url, before = source
    report = copy_store(url, postgres_url)

    assert report.verified
    assert report.copied == {
        "runs": 2, "steps": 2, "checkpoints": 2, "dead_letters": 1, "approvals": 1,
        "proposals": 1, "idempotency": 1, "artifacts": 1, "agent_keys": 2, "inflight": 1,
        "leases": 1, "audit": 6, "audit_head": 1,
    }  # fmt: skip
    assert report.counted == report.copied == counts(postgres_url)
    # Past every copied id: the identity columns of the destination.
    assert report.sequences["checkpoints.id"] == 3
    assert report.sequences["dead_letters.id"] == 2
    assert report.sequences["audit.pos"] == 7
    assert report.sequences["runs.rowid"] == 3

    dest = PostgresStore(postgres_url, clock=clock, migrate=False)
    try:
        assert await snapshot(dest) == before
        assert (await AuditLog(dest, clock).verify()).ok
        # The next insert of every sequence takes a fresh id, and the chain goes on.
        assert (await dest.add_checkpoint("run-a", 3, {"memory": []})).id == 3
        assert (await dest.add_dead_letter("run-a", "manual", {"p": 1})).id == 2
        entry = await AuditLog(dest, clock).append("after.copy", {"n": 1})
        assert entry.seq == 7
        assert entry.prev_hash == before["audit"][-1].hash
        await dest.create_run(RunRecord("run-c", "support", "chat", T0 + 99, T0 + 99))
        assert (await dest.list_runs())[0].id == "run-c"
        await dest.add_agent_key(AgentKeyRecord("key-3", "hash-3", "ck_3", "x", False, T0 + 9))
        assert [key.id for key in await dest.list_agent_keys()] == ["key-1", "key-2", "key-3"]
        verification = await AuditLog(dest, clock).verify()
        assert verification.ok and verification.count == 7
    finally:
        await dest.close()


async def test_a_second_copy_is_refused_and_changes_nothing(
    source: tuple[str, dict[str, Any]], postgres_url: str
) -> None:
    url, _ = source
    copy_store(url, postgres_url)
    before = counts(postgres_url)
    with pytest.raises(CopyRefused, match=r"already holds records \(in runs, steps, .*audit"):
        copy_store(url, postgres_url)
    assert counts(postgres_url) == before


async def test_an_agent_key_alone_in_the_destination_is_refused(
    source: tuple[str, dict[str, Any]], postgres_url: str, clock: FakeClock
) -> None:
    dest = PostgresStore(postgres_url, clock=clock)
    await dest.add_agent_key(AgentKeyRecord("key-9", "hash-9", "ck_9", None, True, T0))
    await dest.close()
    with pytest.raises(CopyRefused, match=r"\(in agent_keys\): a copy goes into an empty store"):
        copy_store(source[0], postgres_url)


async def test_a_failure_mid_copy_leaves_the_destination_empty(
    tmp_path: Path, postgres_url: str, clock: FakeClock
) -> None:
    # SQLite keeps a NUL in text; PostgreSQL refuses it. The lease is copied after the
    # runs, steps, checkpoints, approvals, ... so those were written when it fails.
    store = SQLiteStore(tmp_path / "corral.db", clock=clock)
    await populate(store, clock)
    await store.renew_lease(LeaseRecord("owner-2", "bad\x00host", 1, T0, T0))
    await store.close()

    with pytest.raises(StoreError, match=r"copying leases from .* failed: .*nothing was copied"):
        copy_store(f"sqlite:///{tmp_path / 'corral.db'}", postgres_url)
    assert set(counts(postgres_url).values()) == {0}
    with psycopg.connect(postgres_url) as conn:  # the sequences were not moved either
        row = conn.execute("SELECT nextval(pg_get_serial_sequence('audit', 'pos'))").fetchone()
        assert row == (1,)


async def test_a_constraint_of_the_destination_failing_leaves_it_empty(
    source: tuple[str, dict[str, Any]], postgres_url: str, new_schema: Callable[[], str]
) -> None:
    # PostgreSQL to PostgreSQL, into a destination whose audit table refuses one kind of
    # entry: the last table but one fails after every other table was written.
    first = copy_store(source[0], postgres_url)
    target = new_schema()
    await PostgresStore(target).close()  # migrated
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("ALTER TABLE audit ADD CONSTRAINT no_halts CHECK (kind <> 'run.halted')")
    with pytest.raises(
        StoreError,
        match=r'copying audit from .* failed: new row for relation "audit" violates check'
        r' constraint "no_halts".*nothing was copied',
    ):
        copy_store(postgres_url, target)
    assert set(counts(target).values()) == {0}
    assert counts(postgres_url) == first.copied  # the source is only read


async def test_sealed_values_are_copied_as_stored(
    tmp_path: Path, postgres_url: str, clock: FakeClock
) -> None:
    key = new_data_key().encode()
    inner = SQLiteStore(tmp_path / "corral.db", clock=clock)
    sealed = SealedStore(inner, key)
    await populate(sealed, clock)
    before = await snapshot(sealed)
    await sealed.close()

    copy_store(f"sqlite:///{tmp_path / 'corral.db'}", postgres_url)
    dest = PostgresStore(postgres_url, clock=clock)
    try:
        raw = await dest.get_idempotent("idem-1")
        assert raw is not None and str(raw.result).startswith("corral-sealed:1:")
        assert await snapshot(SealedStore(dest, key)) == before  # the same key opens them
    finally:
        await dest.close()


async def test_sqlite_to_sqlite_keeps_ids_and_counters(
    source: tuple[str, dict[str, Any]], tmp_path: Path, clock: FakeClock
) -> None:
    url, before = source
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:  # a higher id, purged
        conn.execute("UPDATE sqlite_sequence SET seq = 40 WHERE name = 'checkpoints'")
    report = copy_store(url, f"sqlite:///{tmp_path / 'backup.db'}")
    assert report.verified and report.copied["audit"] == 6
    assert report.sequences == {"checkpoints.id": 41, "dead_letters.id": 2}

    backup = SQLiteStore(tmp_path / "backup.db", clock=clock)
    try:
        assert await snapshot(backup) == before
        assert (await AuditLog(backup, clock).verify()).ok
        assert (await backup.add_checkpoint("run-a", 3, {})).id == 41
    finally:
        await backup.close()


async def test_postgresql_to_sqlite_and_back(
    source: tuple[str, dict[str, Any]], postgres_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    url, before = source
    copy_store(url, postgres_url)
    back = tmp_path / "back.db"
    report = copy_store(postgres_url, f"sqlite:///{back}")
    assert report.verified and report.copied["runs"] == 2
    store = SQLiteStore(back, clock=clock)
    try:
        assert await snapshot(store) == before
    finally:
        await store.close()


def test_a_source_behind_this_corral_is_refused_unchanged(
    tmp_path: Path, postgres_url: str
) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for script in MIGRATIONS[:2]:
            conn.executescript(script)
        conn.execute("PRAGMA user_version = 2")
    with pytest.raises(SchemaVersionError, match="schema version 2, this Corral needs 5: open it"):
        copy_store(f"sqlite:///{path}", postgres_url)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)  # not migrated


def test_a_source_from_a_newer_corral_is_refused(tmp_path: Path, postgres_url: str) -> None:
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(SchemaVersionError, match="schema version 99, newer than the 5"):
        copy_store(f"sqlite:///{path}", postgres_url)


@pytest.mark.parametrize(
    ("source", "destination", "message"),
    [
        ("mysql://db/corral", "sqlite:///x.db", "unsupported store URL 'mysql://db/corral'"),
        ("sqlite:///{tmp}/corral.db", "redis://u:pw@h/0", r"unsupported store URL 'redis://u:\*\*\*@h/0'"),
        ("sqlite://:memory:", "sqlite:///x.db", "sqlite://:memory: is gone with its process"),
    ],
)  # fmt: skip
async def test_urls_that_name_no_store_are_refused(
    source: str, destination: str, message: str, tmp_path: Path, clock: FakeClock
) -> None:
    await SQLiteStore(tmp_path / "corral.db", clock=clock).close()
    with pytest.raises(ValueError, match=message):
        copy_store(source.format(tmp=tmp_path), destination.format(tmp=tmp_path))


async def test_stores_out_of_reach_are_named(tmp_path: Path, clock: FakeClock) -> None:
    with pytest.raises(StoreError, match=f"cannot open {tmp_path}/missing.db: no such file"):
        copy_store(f"sqlite:///{tmp_path}/missing.db", "postgresql://postgres@127.0.0.1:9/x")
    await SQLiteStore(tmp_path / "corral.db", clock=clock).close()
    with pytest.raises(StoreError, match=r"cannot open postgresql://127\.0\.0\.1:9/nowhere"):
        copy_store(f"sqlite:///{tmp_path}/corral.db", "postgresql://postgres@127.0.0.1:9/nowhere")


async def test_tables_larger_than_a_batch_arrive_whole(
    tmp_path: Path, postgres_url: str, clock: FakeClock
) -> None:
    store = SQLiteStore(tmp_path / "corral.db", clock=clock)
    await store.create_run(RunRecord("run-a", "support", "chat", T0, T0))
    steps = [
        StepRecord("run-a", seq, "tool", "lookup", {"n": seq}, T0 + seq, T0 + seq, output=seq)
        for seq in range(1, 2 * BATCH + 8)
    ]
    await store.add_steps(steps)
    await store.close()

    report = copy_store(f"sqlite:///{tmp_path / 'corral.db'}", postgres_url)
    assert report.copied["steps"] == report.counted["steps"] == 2 * BATCH + 7
    dest = PostgresStore(postgres_url, clock=clock, migrate=False)
    try:
        assert await dest.list_steps("run-a") == steps
    finally:
        await dest.close()
