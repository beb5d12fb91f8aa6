"""The Store contract on each store (SQLiteStore on a real file, PostgresStore): round
trips, atomic check-and-set, audit appends; and SQLiteStore's own file, migrations, opening."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from corral.calls import HaltReason, RunStatus
from corral.state import (
    AgentKeyRecord,
    ApprovalRecord,
    ArtifactRecord,
    AuditEntry,
    ConstraintError,
    IdempotencyRecord,
    NotFoundError,
    RunRecord,
    SchemaVersionError,
    SQLiteStore,
    StepRecord,
    Store,
    StoreError,
    open_store,
)
from corral.state.sqlite_schema import MIGRATIONS, migrate
from tests.state.conftest import FakeClock

T0 = 1_700_000_000.0


RUN = RunRecord(id="run-1", agent="support", agent_type="triage", created_at=T0, updated_at=T0)
STEP = StepRecord(
    run_id="run-1",
    seq=1,
    kind="tool",
    name="get_customer",
    input={"id": 1},
    started_at=T0,
    ended_at=T0 + 0.5,
)


def run(run_id: str = "run-1", **changes: Any) -> RunRecord:
    return replace(RUN, id=run_id, **changes)


def step(seq: int, run_id: str = "run-1", **changes: Any) -> StepRecord:
    return replace(STEP, run_id=run_id, seq=seq, **changes)


def seal_after(payload: dict[str, Any]) -> Callable[[AuditEntry | None], AuditEntry]:
    """A stand-in for the audit module's seal: next seq, linked to the last hash."""

    def seal(last: AuditEntry | None) -> AuditEntry:
        seq = last.seq + 1 if last else 1
        prev = last.hash if last else ""
        digest = hashlib.sha256(prev.encode() + orjson.dumps(payload)).hexdigest()
        return AuditEntry(seq, T0 + seq, "event", None, payload, prev, digest)

    return seal


def user_version(path: Path | str) -> int:
    with sqlite3.connect(path) as conn:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    return version


# runs


async def test_run_round_trips_every_field(store: Store) -> None:
    await store.create_run(run("parent"))
    full = run(
        task="ticket-42",
        session="s-1",
        status=RunStatus.HALTED,
        halt_reason=HaltReason.BUDGET_COST,
        ended_at=T0 + 9,
        trace_id="abc123",
        input_tokens=1200,
        output_tokens=300,
        cost_usd=0.0123,
        steps=4,
        tool_calls=2,
        outcome={"answer": "refunded", "items": [1, 2.5, None, True]},
        error="boom",
        kill_requested_at=T0 + 8,
        time_to_safe_fail_ms=41.5,
        parent_run_id="parent",
    )
    await store.create_run(full)
    assert await store.get_run("run-1") == full
    assert await store.get_run("missing") is None


async def test_create_run_twice_is_a_constraint_error(store: Store) -> None:
    await store.create_run(run())
    with pytest.raises(ConstraintError, match=r"create_run 'run-1'.*UNIQUE"):
        await store.create_run(run())


async def test_list_runs_newest_first_with_filters(store: Store) -> None:
    await store.create_run(run("a", created_at=T0 + 1, agent="support"))
    await store.create_run(run("b", created_at=T0 + 3, agent="billing"))
    await store.create_run(run("c", created_at=T0 + 2, agent="support", status=RunStatus.HALTED))
    await store.create_run(run("d", created_at=T0 + 2, agent="support"))

    assert [r.id for r in await store.list_runs()] == ["b", "d", "c", "a"]
    assert [r.id for r in await store.list_runs(limit=2)] == ["b", "d"]
    assert [r.id for r in await store.list_runs(agent="support")] == ["d", "c", "a"]
    assert [r.id for r in await store.list_runs(status=RunStatus.RUNNING)] == ["b", "d", "a"]
    halted_support = await store.list_runs(status=RunStatus.HALTED, agent="support")
    assert [r.id for r in halted_support] == ["c"]


async def test_list_runs_by_session(store: Store) -> None:
    await store.create_run(run("a", created_at=T0 + 1, session="s1"))
    await store.create_run(run("b", created_at=T0 + 2, session="s2"))
    await store.create_run(run("c", created_at=T0 + 3, session="s1"))

    assert [r.id for r in await store.list_runs(session="s1")] == ["c", "a"]
    assert [r.id for r in await store.list_runs(session="s1", limit=1)] == ["c"]
    assert await store.list_runs(session="s3") == []


async def test_save_run_keeps_a_kill_requested_elsewhere(store: Store) -> None:
    await store.create_run(run())
    assert await store.request_kill("run-1", T0 + 5)
    await store.save_run(run(steps=3, cost_usd=0.5, updated_at=T0 + 6))
    saved = await store.get_run("run-1")
    assert saved is not None
    assert (saved.steps, saved.cost_usd, saved.updated_at) == (3, 0.5, T0 + 6)
    assert saved.kill_requested_at == T0 + 5


async def test_save_run_never_moves_the_last_checkpoint_back(store: Store) -> None:
    await store.create_run(run())
    stale = await store.get_run("run-1")
    assert stale is not None
    checkpoint = await store.add_checkpoint("run-1", 1, {"k": 1})
    await store.save_run(stale)
    saved = await store.get_run("run-1")
    assert saved is not None and saved.last_checkpoint_id == checkpoint.id


async def test_save_run_of_an_unknown_run_says_so(store: Store) -> None:
    with pytest.raises(NotFoundError, match="no run 'ghost'"):
        await store.save_run(run("ghost"))


async def test_request_kill_only_for_a_running_run(store: Store) -> None:
    await store.create_run(run("live"))
    await store.create_run(run("done", status=RunStatus.COMPLETED, ended_at=T0 + 1))
    assert await store.request_kill("live", T0 + 5)
    assert await store.request_kill("live", T0 + 9)  # still requested; the first time stays
    live = await store.get_run("live")
    assert live is not None and live.kill_requested_at == T0 + 5
    assert not await store.request_kill("done", T0 + 5)
    assert not await store.request_kill("ghost", T0 + 5)


# steps


async def test_steps_round_trip_in_seq_order(store: Store) -> None:
    await store.create_run(run())
    llm = step(
        2,
        kind="llm",
        name="smart",
        input={"messages": [{"role": "user", "content": "hi"}]},
        output={"text": "hello"},
        input_tokens=10,
        output_tokens=3,
        cost_usd=0.0001,
        model_used="gpt-4o",
    )
    failed = step(3, status="error", error="timeout", idempotency_key="idem-3")
    await store.add_steps([failed, llm, step(1, output=None)])
    assert await store.list_steps("run-1") == [step(1), llm, failed]
    assert await store.list_steps("run-1", last=2) == [llm, failed]
    assert await store.list_steps("run-1", last=0) == []
    assert await store.list_steps("other") == []


async def test_a_bad_row_fails_the_whole_batch(store: Store) -> None:
    await store.create_run(run())
    await store.add_steps([step(1)])
    with pytest.raises(ConstraintError, match=r"add_steps for run 'run-1'.*UNIQUE"):
        await store.add_steps([step(2), step(3), step(1)])
    assert [s.seq for s in await store.list_steps("run-1")] == [1]


async def test_steps_of_an_unknown_run_are_refused(store: Store) -> None:
    with pytest.raises(ConstraintError, match=r"add_steps for run 'ghost'.*FOREIGN KEY"):
        await store.add_steps([step(1, run_id="ghost")])


async def test_an_invalid_status_is_refused(store: Store) -> None:
    await store.create_run(run())
    with pytest.raises(ConstraintError, match="CHECK"):
        await store.add_steps([step(1, status="fine")])


# checkpoints


async def test_checkpoint_becomes_the_runs_last(store: Store, clock: FakeClock) -> None:
    await store.create_run(run())
    assert await store.last_checkpoint("run-1") is None
    first = await store.add_checkpoint("run-1", 1, {"notes": ["a"]})
    clock.advance(1)
    second = await store.add_checkpoint("run-1", 2, {"notes": ["a", "b"]})
    assert second.id > first.id and second.created_at == clock.now
    assert await store.get_checkpoint(first.id) == first
    assert await store.last_checkpoint("run-1") == second
    saved = await store.get_run("run-1")
    assert saved is not None and saved.last_checkpoint_id == second.id
    assert await store.get_checkpoint(999) is None


async def test_checkpoint_of_an_unknown_run_is_refused(store: Store) -> None:
    with pytest.raises(ConstraintError, match="add_checkpoint for run 'ghost'"):
        await store.add_checkpoint("ghost", 1, {})


# dead letters


async def test_dead_letters_queue_and_settle(store: Store, clock: FakeClock) -> None:
    await store.create_run(run())
    packet = {"goal": "refund", "steps": [{"tool": "refund", "args": {"amount": 5}}]}
    first = await store.add_dead_letter("run-1", HaltReason.LOOP_REPEAT, packet)
    second = await store.add_dead_letter("run-1", "timeout", {})
    assert (first.status, first.packet, first.created_at) == ("open", packet, clock.now)
    assert await store.get_dead_letter(first.id) == first
    assert await store.list_dead_letters() == [first, second]

    clock.advance(10)
    assert await store.set_dead_letter_status(first.id, "retried")
    assert not await store.set_dead_letter_status(999, "dropped")
    assert await store.list_dead_letters() == [second]
    retried = await store.list_dead_letters(status="retried")
    assert [(d.id, d.updated_at) for d in retried] == [(first.id, clock.now)]
    assert len(await store.list_dead_letters(status=None)) == 2
    with pytest.raises(ConstraintError, match="CHECK"):
        await store.set_dead_letter_status(first.id, "lost")  # type: ignore[arg-type]


# approvals


def approval(approval_id: str, requested_at: float = T0) -> ApprovalRecord:
    return ApprovalRecord(
        id=approval_id,
        run_id="run-1",
        step=3,
        tool="refund",
        args={"amount": 500},
        rule="args.amount > 100",
        requested_at=requested_at,
        timeout_at=requested_at + 300,
    )


async def test_an_approval_is_decided_exactly_once(store: Store) -> None:
    await store.create_run(run())
    await store.add_approval(approval("ap-1"))
    assert await store.get_approval("ap-1") == approval("ap-1")

    decisions = await asyncio.gather(
        store.decide_approval("ap-1", "approved", by="alice", at=T0 + 5, note="ok"),
        store.decide_approval("ap-1", "rejected", by="bob", at=T0 + 6),
    )
    assert decisions == [True, False]
    decided = await store.get_approval("ap-1")
    assert decided is not None
    assert (decided.status, decided.decided_by, decided.decided_at, decided.note) == (
        "approved",
        "alice",
        T0 + 5,
        "ok",
    )
    assert not await store.decide_approval("ghost", "approved", by="alice", at=T0)
    with pytest.raises(ValueError, match="cannot be 'pending'"):
        await store.decide_approval("ap-1", "pending", by="alice", at=T0)


async def test_list_approvals_by_status(store: Store) -> None:
    await store.create_run(run())
    await store.add_approval(approval("late", T0 + 2))
    await store.add_approval(approval("early", T0 + 1))
    await store.decide_approval("late", "timeout", by=None, at=T0 + 302)
    assert [a.id for a in await store.list_approvals()] == ["early", "late"]
    assert [a.id for a in await store.list_approvals(status="pending")] == ["early"]
    assert [a.id for a in await store.list_approvals(status="timeout")] == ["late"]


# idempotency, artifacts, keys


async def test_idempotency_first_writer_wins(store: Store) -> None:
    await store.create_run(run())
    first = IdempotencyRecord("refund:42", "run-1", {"refund_id": "r1"}, T0)
    later = IdempotencyRecord("refund:42", "run-1", {"refund_id": "r2"}, T0 + 1)
    assert await store.get_idempotent("refund:42") is None
    assert await store.put_idempotent(first) == first
    assert await store.put_idempotent(later) == first
    assert await store.get_idempotent("refund:42") == first


async def test_artifacts_keep_their_bytes(store: Store) -> None:
    await store.create_run(run())
    blob = ArtifactRecord("art-1", "run-1", bytes(range(256)) * 4, "application/pdf", T0)
    await store.put_artifact(blob)
    assert await store.get_artifact("art-1") == blob
    assert await store.get_artifact("art-2") is None
    with pytest.raises(ConstraintError, match="put_artifact 'art-1'"):
        await store.put_artifact(blob)


async def test_agent_keys_are_found_by_hash_and_revoked_once(store: Store) -> None:
    agent_key = AgentKeyRecord("k1", "hash-1", "ck_ab12", "support", False, T0, expires_at=T0 + 9)
    admin_key = AgentKeyRecord("k2", "hash-2", "ck_cd34", None, True, T0 + 1)
    await store.add_agent_key(agent_key)
    await store.add_agent_key(admin_key)
    assert await store.find_agent_key("hash-2") == admin_key
    assert await store.find_agent_key("nope") is None
    assert await store.list_agent_keys() == [agent_key, admin_key]

    assert await store.revoke_agent_key("k1", T0 + 5)
    assert not await store.revoke_agent_key("k1", T0 + 6)
    assert not await store.revoke_agent_key("ghost", T0 + 6)
    revoked = await store.find_agent_key("hash-1")
    assert revoked is not None and revoked.revoked_at == T0 + 5

    with pytest.raises(ConstraintError, match="UNIQUE"):
        await store.add_agent_key(AgentKeyRecord("k3", "hash-1", "ck_x", "a", False, T0))
    with pytest.raises(ConstraintError, match="CHECK"):
        await store.add_agent_key(AgentKeyRecord("k4", "hash-4", "ck_y", None, False, T0))


# audit


async def test_audit_appends_link_and_move_the_head(store: Store) -> None:
    assert await store.audit_head() is None
    assert await store.list_audit() == []
    first = await store.append_audit(seal_after({"n": 1}))
    second = await store.append_audit(seal_after({"n": 2, "usd": 0.25}))
    assert (first.seq, first.prev_hash) == (1, "")
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert await store.list_audit() == [first, second]
    assert await store.audit_head() == (2, second.hash)


async def test_a_failing_seal_appends_nothing(store: Store) -> None:
    await store.append_audit(seal_after({"n": 1}))

    def broken(last: AuditEntry | None) -> AuditEntry:
        raise RuntimeError("hash failed")

    with pytest.raises(RuntimeError, match="hash failed"):
        await store.append_audit(broken)
    assert len(await store.list_audit()) == 1
    head = await store.audit_head()
    assert head is not None and head[0] == 1


async def test_concurrent_appenders_on_one_file_stay_contiguous(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    async with SQLiteStore(path) as one, SQLiteStore(path) as two:
        await asyncio.gather(
            *(store.append_audit(seal_after({"n": n})) for n in range(50) for store in (one, two))
        )
        entries = await one.list_audit()
        assert [e.seq for e in entries] == list(range(1, 101))
        for before, after in itertools.pairwise(entries):
            assert after.prev_hash == before.hash
        assert await two.audit_head() == (100, entries[-1].hash)


async def test_list_audit_shows_an_edited_seq_in_stored_order(
    sqlite_store: Store,
) -> None:
    for n in range(3):
        await sqlite_store.append_audit(seal_after({"n": n}))
    with sqlite3.connect(sqlite_store.path) as conn:
        conn.execute("UPDATE audit SET seq = 9 WHERE seq = 2")
    conn.close()
    assert [e.seq for e in await sqlite_store.list_audit()] == [1, 9, 3]


# migrations and opening


async def test_a_new_file_is_migrated_to_the_latest_version(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    sqlite3.connect(path).close()  # an empty file, as a user might create it
    assert user_version(path) == 0
    async with SQLiteStore(path) as store:
        await store.create_run(run())
    assert user_version(path) == len(MIGRATIONS)
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    assert {"runs", "steps", "checkpoints", "dead_letters", "approvals"} <= tables
    assert {"idempotency", "artifacts", "agent_keys", "audit", "audit_head"} <= tables
    assert journal == "wal"


async def test_reopening_a_migrated_file_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "again.db"
    async with SQLiteStore(path) as store:
        await store.create_run(run())
    async with SQLiteStore(path) as store:
        assert await store.get_run("run-1") == run()
    assert user_version(path) == len(MIGRATIONS)


def test_a_file_from_a_newer_corral_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(
        SchemaVersionError, match=rf"future\.db has schema version {len(MIGRATIONS) + 1}"
    ):
        SQLiteStore(path)


def test_each_migration_is_its_own_transaction(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "steps.db", isolation_level=None)
    good = "CREATE TABLE a (x INTEGER);"
    broken = "CREATE TABLE b (x INTEGER);\nINSERT INTO missing VALUES (1);"
    with pytest.raises(sqlite3.OperationalError, match="no such table: missing"):
        migrate(conn, [good, broken])
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert (conn.execute("PRAGMA user_version").fetchone()[0], tables) == (1, {"a"})
    assert migrate(conn, [good, "CREATE TABLE b (x INTEGER);"]) == 2
    conn.close()


def test_a_file_that_is_not_a_database_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"not a database, just some text that is long enough" * 40)
    with pytest.raises(StoreError, match=r"cannot open .*notes\.db"):
        SQLiteStore(path)


async def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///data/rel.db")
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")  # sqlite:////tmp/...: four slashes
    memory = open_store("sqlite://:memory:")
    try:
        assert isinstance(relative, SQLiteStore) and relative.path == "data/rel.db"
        assert isinstance(absolute, SQLiteStore) and absolute.path == f"{tmp_path}/abs.db"
        assert (tmp_path / "data" / "rel.db").exists()
        await memory.create_run(run())
        assert await memory.get_run("run-1") == run()
    finally:
        for opened in (relative, absolute, memory):
            await opened.close()
    for bad in ("sqlite:///", "corral.db", "mysql://user@host/db"):
        with pytest.raises(ValueError, match=rf"unsupported store URL '{bad}'.*sqlite:///"):
            open_store(bad)


async def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "closed.db")
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.get_run("run-1")


async def test_stores_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    start = threading.Barrier(4)

    def open_when_all_ready() -> SQLiteStore:
        start.wait()
        return SQLiteStore(path)

    stores = await asyncio.gather(*(asyncio.to_thread(open_when_all_ready) for _ in range(4)))
    for opened in stores:
        await opened.close()
    assert user_version(path) == len(MIGRATIONS)
