"""What is PostgreSQL's own: several nodes on one database (OS processes and stores of
their own connections racing on the audit chain, approvals, claims, idempotent results),
migrations raced by processes opening a new database, the server going away and coming
back, the schema version, and open_store's URLs."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import corral
from corral.calls import HaltReason, RunStatus
from corral.state import (
    ApprovalRecord,
    ConstraintError,
    IdempotencyRecord,
    LeaseRecord,
    RunRecord,
    SchemaVersionError,
    StepRecord,
    StoreError,
    open_store,
)
from corral.state.postgres import PostgresStore
from corral.state.postgres_schema import MIGRATIONS, migrate
from corral.telemetry.audit import AuditLog
from tests.state.conftest import POSTGRES_URL, postgres_admin
from tests.support import TcpProxy

T0 = 1_700_000_000.0
RUN = RunRecord(id="run-1", agent="support", agent_type="triage", created_at=T0, updated_at=T0)

# A writer process: opens two stores (two pools) on the URL, says "ready", waits for "go",
# then appends N audit entries and records N steps with their entries, all at once.
WRITER = """
import asyncio, sys
from corral.state import RunRecord, StepRecord
from corral.state.postgres import PostgresStore
from corral.telemetry.audit import AuditLog

async def main(url, name, n):
    stores = [PostgresStore(url) for _ in range(2)]
    run = RunRecord(id=f"run-{name}", agent=name, agent_type="t", created_at=0.0, updated_at=0.0)
    await stores[0].create_run(run)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    log = AuditLog(stores[1])
    def step(seq):
        return StepRecord(run.id, seq, "tool", "probe", {}, 0.0, 0.0)
    await asyncio.gather(
        *(AuditLog(stores[i % 2]).append("event", {"writer": name, "n": i}) for i in range(n)),
        *(stores[1].record_step(run, step(s), log.seal("step", {"writer": name, "seq": s}, run.id))
          for s in range(1, n + 1)),
    )
    for store in stores:
        await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""

# Opens (and so migrates) the store once told to, and reports the schema version.
OPENER = """
import sys
from corral.state.postgres import PostgresStore
print("ready", flush=True)
sys.stdin.readline()
PostgresStore(sys.argv[1])
"""


# Writes batches of BATCH steps until it is killed; says "writing" after the first commit.
BATCH = 500
BATCH_WRITER = """
import asyncio, itertools, sys
from corral.state import RunRecord, StepRecord
from corral.state.postgres import PostgresStore

async def main(url, batch):
    store = PostgresStore(url)
    await store.create_run(RunRecord("crash", "crash", "crash", 0.0, 0.0))
    for n in itertools.count():
        await store.add_steps([
            StepRecord("crash", n * batch + i + 1, "tool", "echo", {"text": "x" * 1200}, 0.0, 0.0)
            for i in range(batch)
        ])
        if n == 0:
            print("writing", flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def child_env() -> dict[str, str]:
    # The child imports corral from wherever this process found it (installed or src/).
    source = str(Path(corral.__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


async def run_together(script: str, *argvs: list[str]) -> None:
    """Start one process per argv, let them all go at once, and wait for all: each must
    exit 0."""
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env(),
        )
        for argv in argvs
    ]
    try:
        for child in children:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            assert line == b"ready\n", (await child.communicate())[1].decode()
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            await child.stdin.drain()
        for child in children:
            _, errors = await asyncio.wait_for(child.communicate(), 120)
            assert child.returncode == 0, errors.decode()
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()


@pytest.fixture
async def nodes(postgres_url: str) -> AsyncIterator[list[PostgresStore]]:
    """Three stores on one database, each with its own pool: three nodes."""
    opened = [PostgresStore(postgres_url) for _ in range(3)]
    yield opened
    for store in opened:
        await store.close()


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """A new, empty database (not only a schema), dropped after the test."""
    name = f"corral_test_{uuid.uuid4().hex}"
    with postgres_admin() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield make_conninfo(POSTGRES_URL, dbname=name)
    with postgres_admin() as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


# the audit chain under several writers


async def test_writers_in_two_processes_and_three_nodes_chain_without_a_fork(
    postgres_url: str, nodes: list[PostgresStore]
) -> None:
    n = 40
    here = [
        AuditLog(nodes[i % 3]).append("event", {"writer": "here", "n": i}) for i in range(3 * n)
    ]
    await asyncio.gather(
        run_together(WRITER, [postgres_url, "a", str(n)], [postgres_url, "b", str(n)]),
        *here,
    )
    entries = await nodes[0].list_audit()
    total = 3 * n + 2 * (2 * n)
    assert [e.seq for e in entries] == list(range(1, total + 1))  # gapless, in stored order
    assert len({e.prev_hash for e in entries}) == total  # no two entries share a parent
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.hash
    assert (await AuditLog(nodes[1]).verify()).ok
    assert await nodes[2].audit_head() == (total, entries[-1].hash)
    writers = [e.payload["writer"] for e in entries]
    assert (writers.count("a"), writers.count("b"), writers.count("here")) == (2 * n, 2 * n, 3 * n)
    for name in ("a", "b"):  # each step landed with its entry
        assert [s.seq for s in await nodes[0].list_steps(f"run-{name}")] == list(range(1, n + 1))


async def test_steps_of_several_nodes_and_their_entries_chain_together(
    nodes: list[PostgresStore],
) -> None:
    for node, name in zip(nodes, "xyz", strict=True):
        await node.create_run(replace(RUN, id=f"run-{name}"))
    logs = [AuditLog(node) for node in nodes]

    def recorded(i: int, seq: int) -> Any:
        run = replace(RUN, id=f"run-{'xyz'[i]}", steps=seq)
        step = StepRecord(run.id, seq, "tool", "probe", {}, T0, T0 + 1)
        return nodes[i].record_step(run, step, logs[i].seal("step", {"seq": seq}, run.id))

    await asyncio.gather(*(recorded(i, seq) for seq in range(1, 31) for i in range(3)))
    assert (await logs[0].verify()).ok
    assert len(await nodes[1].list_audit()) == 90
    for name in "xyz":
        stored = await nodes[2].get_run(f"run-{name}")
        assert stored is not None and stored.steps == 30


# check-and-set across nodes


async def test_an_approval_raced_from_two_nodes_is_decided_once(
    nodes: list[PostgresStore],
) -> None:
    one, two = nodes[0], nodes[1]
    await one.create_run(RUN)
    for n in range(20):
        await one.add_approval(
            ApprovalRecord(f"ap-{n}", "run-1", 1, "refund", {"n": n}, "rule", T0, T0 + 60)
        )
    for n in range(20):
        decisions = await asyncio.gather(
            one.decide_approval(f"ap-{n}", "approved", by="alice", at=T0 + 1),
            two.decide_approval(f"ap-{n}", "rejected", by="bob", at=T0 + 2),
        )
        assert sorted(decisions) == [False, True]
        decided = await nodes[2].get_approval(f"ap-{n}")
        assert decided is not None
        winner = ("approved", "alice") if decisions[0] else ("rejected", "bob")
        assert (decided.status, decided.decided_by) == winner


async def test_a_run_raced_for_by_two_nodes_is_claimed_once(nodes: list[PostgresStore]) -> None:
    one, two = nodes[0], nodes[1]
    for owner in ("dead", "b", "c"):
        await one.renew_lease(LeaseRecord(owner, "h", 1, T0, T0))
    for n in range(20):
        await one.create_run(replace(RUN, id=f"r{n}", owner="dead"))
    for n in range(20):
        claims = await asyncio.gather(
            one.claim_run(f"r{n}", "b", dead={"dead"}), two.claim_run(f"r{n}", "c", dead={"dead"})
        )
        winners = [claim.owner for claim in claims if claim is not None]
        assert len(winners) == 1
        stored = await nodes[2].get_run(f"r{n}")
        assert stored is not None and stored.owner == winners[0]


async def test_an_idempotent_result_raced_from_three_nodes_is_stored_once(
    nodes: list[PostgresStore],
) -> None:
    await nodes[0].create_run(RUN)
    records = [IdempotencyRecord("refund:42", "run-1", {"by": n}, T0 + n) for n in range(3)]
    stored = await asyncio.gather(
        *(node.put_idempotent(r) for node, r in zip(nodes, records, strict=True))
    )
    assert stored[0] == stored[1] == stored[2] and stored[0] in records
    assert await nodes[0].get_idempotent("refund:42") == stored[0]


async def test_kills_and_leases_are_seen_by_every_node(nodes: list[PostgresStore]) -> None:
    one, two, three = nodes
    await one.create_run(RUN)
    assert await two.request_kill("run-1", T0 + 5)
    assert await three.kill_requests() == {"run-1": T0 + 5}
    await one.renew_lease(LeaseRecord("node-1", "h1", 1, T0, T0))
    await two.renew_lease(LeaseRecord("node-2", "h2", 2, T0 + 1, T0 + 1))
    await one.renew_lease(LeaseRecord("node-1", "h1", 1, T0, T0 + 9))
    assert [(lease.owner, lease.heartbeat_at) for lease in await three.list_leases()] == [
        ("node-1", T0 + 9),
        ("node-2", T0 + 1),
    ]
    await three.drop_leases(["node-1"])
    assert [lease.owner for lease in await one.list_leases()] == ["node-2"]


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.4])
async def test_a_writer_killed_mid_batch_leaves_each_batch_whole_or_absent(
    postgres_url: str, delay: float
) -> None:
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        BATCH_WRITER,
        postgres_url,
        str(BATCH),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    try:
        assert writer.stdout is not None
        started = await asyncio.wait_for(writer.stdout.readline(), 60)
        await asyncio.sleep(delay)
    finally:
        writer.kill()  # SIGKILL: no handler runs, as in an OOM kill or a crash
        _, errors = await writer.communicate()
    assert started == b"writing\n", errors.decode()
    async with PostgresStore(postgres_url) as store:
        steps = await store.list_steps("crash")
    assert len(steps) >= BATCH and len(steps) % BATCH == 0
    assert [s.seq for s in steps] == list(range(1, len(steps) + 1))


# migrations


async def test_processes_opening_a_new_database_at_once_migrate_it_once(
    fresh_database: str,
) -> None:
    await run_together(OPENER, *([fresh_database] for _ in range(4)))
    with psycopg.connect(fresh_database) as conn:
        version = conn.execute("SELECT version FROM schema_version").fetchall()
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
    assert version == [(len(MIGRATIONS),)] and len(MIGRATIONS) == 5
    assert {"runs", "steps", "checkpoints", "dead_letters", "approvals", "proposals"} <= tables
    assert {"idempotency", "artifacts", "agent_keys", "audit", "audit_head"} <= tables
    assert {"inflight", "leases", "schema_version"} <= tables
    async with PostgresStore(fresh_database) as store:  # and it opens as any database does
        await store.create_run(RUN)
        assert await store.get_run("run-1") == RUN


async def test_a_version_1_database_with_data_migrates_to_the_latest(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert migrate(conn, MIGRATIONS[:1]) == 1
        # Rows as Corral 1 wrote them: no topup, owner, oneshot, waiting_s or trace_span yet.
        conn.execute(
            "INSERT INTO runs (id, agent, agent_type, created_at, updated_at, status,"
            " halt_reason, ended_at, input_tokens, output_tokens, cost_usd, steps, tool_calls,"
            " outcome) VALUES ('old', 'support', 'triage', %s, %s, 'halted', 'timeout', %s,"
            " 10, 5, 0.01, 2, 1, '{\"answer\": 42}')",
            (T0, T0 + 1, T0 + 2),
        )
        conn.execute(
            "INSERT INTO dead_letters (run_id, reason, packet, status, created_at, updated_at)"
            " VALUES ('old', 'timeout', '{\"goal\": \"g\"}', 'open', %s, %s)",
            (T0 + 2, T0 + 2),
        )
    async with PostgresStore(postgres_url) as store:
        assert await store.get_run("old") == RunRecord(
            id="old", agent="support", agent_type="triage", created_at=T0, updated_at=T0 + 1,
            status=RunStatus.HALTED, halt_reason="timeout", ended_at=T0 + 2, input_tokens=10,
            output_tokens=5, cost_usd=0.01, steps=2, tool_calls=1, outcome={"answer": 42},
        )  # fmt: skip
        reopened = await store.reopen_run("old", topup={"wall_clock": 60}, at=T0 + 3)
        assert reopened.topup == {"wall_clock": 60}
        # Migration 3's status: a step of a call whose process died.
        await store.add_steps([StepRecord("old", 3, "llm", "m", {}, T0, T0, status="interrupted")])
        assert [s.status for s in await store.list_steps("old")] == ["interrupted"]
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (5,)


def test_a_database_of_a_newer_corral_is_refused(postgres_url: str) -> None:
    PostgresStore(postgres_url)  # migrated, not used: construction opens no pool
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (len(MIGRATIONS) + 1,))
    with pytest.raises(SchemaVersionError, match=rf"has schema version {len(MIGRATIONS) + 1}"):
        PostgresStore(postgres_url)


def test_each_migration_is_its_own_transaction(postgres_url: str) -> None:
    good = "CREATE TABLE a (x INTEGER);"
    broken = "CREATE TABLE b (x INTEGER); INSERT INTO missing VALUES (1);"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedTable, match="missing"):
            migrate(conn, [good, broken])
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
            )
        }
        version = conn.execute("SELECT version FROM schema_version").fetchone()
        assert (version, tables) == ((1,), {"a", "schema_version"})
        assert migrate(conn, [good, "CREATE TABLE b (x INTEGER);"]) == 2


# the server going away


async def test_terminated_connections_fail_with_store_error_then_the_pool_recovers(
    postgres_url: str,
) -> None:
    name = f"corral-test-{uuid.uuid4().hex[:12]}"
    store = PostgresStore(make_conninfo(postgres_url, application_name=name), timeout=5.0)
    try:
        await store.create_run(RUN)
        with postgres_admin() as admin:
            cut = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (name,),
            ).fetchall()
        assert cut and all(ok for (ok,) in cut)
        with pytest.raises(StoreError, match=r"PostgreSQL store failed") as failed:
            await store.get_run("run-1")
        assert not isinstance(failed.value, ConstraintError)
        # The same store, once its pool has replaced the connection: reads and writes.
        assert await eventually(lambda: store.get_run("run-1")) == RUN
        await store.save_run(replace(RUN, steps=3))
        stored = await store.get_run("run-1")
        assert stored is not None and stored.steps == 3
    finally:
        await store.close()


async def eventually(read: Any, within: float = 30.0) -> Any:
    """What `read()` returns once it stops raising StoreError (the pool reconnects with
    a backoff), failing after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await read()
        except StoreError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_the_server_going_away_is_a_store_error_and_its_return_heals_the_store(
    postgres_url: str,
) -> None:
    info = conninfo_to_dict(POSTGRES_URL)
    proxy = TcpProxy((str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432)))
    await proxy.start()
    # Opened in a thread: construction migrates over a blocking connection, and the proxy
    # serves it from this loop.
    store = await asyncio.to_thread(
        PostgresStore,
        make_conninfo(postgres_url, host="127.0.0.1", port=str(proxy.port)),
        timeout=2.0,
    )
    try:
        await store.create_run(RUN)
        await proxy.stop()
        with pytest.raises(StoreError) as cut:  # the pooled connection is cut
            await store.get_run("run-1")
        with pytest.raises(StoreError) as refused:  # and no new one can be made
            await store.save_run(RUN)
        for failure in (cut.value, refused.value):
            assert not isinstance(failure, ConstraintError)
        with pytest.raises(StoreError):
            store.queue_step(RUN, StepRecord("run-1", 1, "tool", "x", {}, T0, T0))
            await store.list_steps("run-1")  # the queued step failed (logged); reads fail
        await proxy.start()  # the same port
        assert await eventually(lambda: store.get_run("run-1")) == RUN
        await store.record_step(
            replace(RUN, steps=1), StepRecord("run-1", 1, "tool", "x", {}, T0, T0)
        )
        assert [s.seq for s in await store.list_steps("run-1")] == [1]
    finally:
        await store.close()
        await proxy.stop()


def test_a_server_that_does_not_answer_is_named_at_open() -> None:
    with pytest.raises(StoreError, match=r"cannot open postgresql://127\.0\.0\.1:1/"):
        PostgresStore("postgresql://postgres@127.0.0.1:1/test", timeout=2.0)


# PostgreSQL's side of contract tests that reach into the database


async def test_halt_run_is_one_transaction(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as store:
        await store.create_run(RUN)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                "CREATE FUNCTION full_queue() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " RAISE EXCEPTION 'queue full' USING ERRCODE = 'check_violation'; END $$;"
                " CREATE TRIGGER full_queue BEFORE INSERT ON dead_letters"
                " FOR EACH ROW EXECUTE FUNCTION full_queue()"
            )
        halted = replace(
            RUN, status=RunStatus.HALTED, halt_reason=HaltReason.BUDGET_COST, ended_at=T0 + 9
        )
        with pytest.raises(ConstraintError, match=r"halt_run 'run-1'.*queue full"):
            await store.halt_run(halted, {"goal": "refund"})
        assert await store.get_run("run-1") == RUN


async def test_list_audit_shows_an_edited_seq_in_stored_order(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as store:
        log = AuditLog(store)
        for n in range(3):
            await log.append("event", {"n": n})
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("UPDATE audit SET seq = 9 WHERE seq = 2")
        assert [e.seq for e in await store.list_audit()] == [1, 9, 3]
        assert not (await log.verify()).ok


async def test_a_closed_store_says_so(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.create_run(RUN)
    store.queue_step(RUN, StepRecord("run-1", 1, "tool", "x", {}, T0, T0))
    await store.close()  # after the queued step is written
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.get_run("run-1")
    async with PostgresStore(postgres_url) as again:
        assert [s.seq for s in await again.list_steps("run-1")] == [1]


async def test_open_store_opens_postgresql_urls(postgres_url: str) -> None:
    info = conninfo_to_dict(postgres_url)
    user, host, port = info.get("user", "postgres"), info.get("host"), info.get("port", 5432)
    where = f"{user}@{host}:{port}"
    options = str(info["options"]).replace("=", "%3D")
    for scheme in ("postgresql", "postgres"):
        store = open_store(f"{scheme}://{where}/{info['dbname']}?options={options}")
        try:
            assert isinstance(store, PostgresStore)
            await store.create_run(replace(RUN, id=f"run-{scheme}"))
        finally:
            await store.close()
    async with PostgresStore(postgres_url) as store:
        assert {r.id for r in await store.list_runs()} == {"run-postgresql", "run-postgres"}
    spaced = options.replace("-csearch_path", "-c%20search_path")  # libpq's %20, not "+"
    sized = open_store(f"postgresql://{where}/{info['dbname']}?pool_size=3&options={spaced}")
    try:
        assert isinstance(sized, PostgresStore) and sized._pool.max_size == 3
        assert await sized.get_run("run-postgres") is not None  # libpq's options passed on
    finally:
        await sized.close()
    with pytest.raises(ValueError, match="pool_size must be a number, got 'many'"):
        open_store(f"postgresql://{where}/{info['dbname']}?pool_size=many")
