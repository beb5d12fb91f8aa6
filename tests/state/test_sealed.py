"""SealedStore: every Store method delegated; what is used again encrypted and read back
exact; what is kept for people redacted; the raw values nowhere in the database (SQLite's
file and WAL, PostgreSQL's tables), on each store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from corral.calls import HaltReason, RunStatus
from corral.guards.storage import redact_json
from corral.state import (
    AgentKeyRecord,
    ApprovalRecord,
    ArtifactRecord,
    IdempotencyRecord,
    InflightRecord,
    LeaseRecord,
    ProposalRecord,
    RunRecord,
    SQLiteStore,
    StepRecord,
    Store,
)
from corral.state.postgres import PostgresStore
from corral.state.sealed import (
    DATA_KEY_ENV,
    PREFIX,
    DataKeyError,
    SealedStore,
    data_key,
    new_data_key,
)
from corral.telemetry.audit import AuditLog

T0 = 1_700_000_000.0
EMAIL, CARD, SSN = "ada@example.com", "4111 1111 1111 1111", "536-22-1234"
RAW = (EMAIL, CARD, SSN)
SECRET = {"to": EMAIL, "card": CARD, "ssn": SSN}

RUN = RunRecord(id="r1", agent="support", agent_type="operational", created_at=T0, updated_at=T0)
STEP = StepRecord(
    "r1", 1, "tool", "send_email", {"args": SECRET}, T0, T0 + 1, output={"sent": f"to {EMAIL}"}
)
APPROVAL = ApprovalRecord(
    id="apr_1",
    run_id="r1",
    step=2,
    tool="send_email",
    args=SECRET,
    rule="approvals[0]",
    requested_at=T0,
    timeout_at=T0 + 3600,
    call_key="r1:2",
    request_key="req-1",
    panel={"args": SECRET, "reason": f"customer {EMAIL} asked", "escalate_to": "ops@example.com"},
    answer={"text": f"card {CARD}", "tool_calls": []},
)


class Recording:
    """Passes every attribute through to `inner`, noting the names of the methods used."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.used: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.used.add(name)
        return getattr(self.inner, name)


def raw_bytes(store: Store) -> bytes:
    """Everything the store's database holds: SQLite's file and WAL, or every value of
    every table of the PostgreSQL store's schema (bytea as its bytes)."""
    if isinstance(store, SQLiteStore):
        path = Path(store.path)
        wal = path.with_name(path.name + "-wal")
        return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    assert isinstance(store, PostgresStore)
    found = b""
    with psycopg.connect(store.url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
        for (table,) in tables:
            for row in conn.execute(f"SELECT * FROM {table}"):
                for value in row:
                    found += value if isinstance(value, bytes) else str(value).encode()
    return found


def assert_no_raw(store: Store) -> None:
    found = raw_bytes(store)
    for value in RAW:
        assert value.encode() not in found, value


def reopened(store: Store) -> Store:
    """Another store object on the same database, as another process opens it."""
    if isinstance(store, SQLiteStore):
        return SQLiteStore(store.path)
    assert isinstance(store, PostgresStore)
    return PostgresStore(store.url)


@pytest.fixture
async def sealed(store: Store) -> AsyncIterator[SealedStore]:
    sealing = SealedStore(store, new_data_key().encode(), redact_json)
    yield sealing
    await sealing.close()


def test_every_store_method_is_its_own() -> None:
    # An abstract method SealedStore inherited would not even instantiate; one it has must
    # be written on SealedStore itself, not borrowed from elsewhere.
    missing = [name for name in Store.__abstractmethods__ if name not in vars(SealedStore)]
    assert missing == []


async def test_every_store_method_reaches_the_inner_store(store: Store) -> None:
    recording = Recording(store)
    sealing = SealedStore(recording, new_data_key().encode(), redact_json)  # type: ignore[arg-type]
    store = sealing
    lease = LeaseRecord("me", "host", 1, T0, T0)
    await store.renew_lease(lease)
    await store.create_run(replace(RUN, owner="me"))
    await store.save_run(replace(RUN, owner="me", task="t"))
    await store.get_run("r1")
    await store.list_runs()
    await store.request_kill("r1", T0)
    await store.kill_requests()
    await store.claim_run("r1", "me", dead=[])
    await store.orphaned_runs([])
    await store.spending(since=T0 - 1)
    await store.begin_call(InflightRecord("c1", "r1", "me", 1, "tool", "x", T0, 0, 0, 0.0))
    await store.inflight("r1")
    await store.list_leases()
    await store.add_steps([STEP])
    await store.record_step(RUN, replace(STEP, seq=2), settles="c1")
    store.queue_step(RUN, replace(STEP, seq=3))
    await store.list_steps("r1")
    checkpoint = await store.add_checkpoint("r1", 1, SECRET)
    await store.get_checkpoint(checkpoint.id)
    await store.last_checkpoint("r1")
    await store.add_approval(APPROVAL)
    await store.get_approval("apr_1")
    await store.list_approvals()
    await store.find_approvals(call_key="r1:2")
    await store.approvals_by_id(["apr_1"])
    await store.escalate_approval("apr_1", escalations=0, timeout_at=T0 + 7200)
    await store.decide_approval("apr_1", "approved", by="alice", at=T0 + 1, args=SECRET)
    proposal = ProposalRecord("p1", "r1", "support", "sql_write", SECRET, "write", T0)
    await store.add_proposal(proposal)
    await store.get_proposal("p1")
    await store.list_proposals()
    await store.review_proposal("p1", "agree", by="alice", at=T0)
    await store.put_idempotent(IdempotencyRecord("k", "r1", SECRET, T0))
    await store.get_idempotent("k")
    await store.put_artifact(ArtifactRecord("h", "r1", CARD.encode(), "text/plain", T0))
    await store.get_artifact("h")
    await store.add_agent_key(AgentKeyRecord("k1", "hash", "ck_", "support", False, T0))
    await store.find_agent_key("hash")
    await store.list_agent_keys()
    await store.revoke_agent_key("k1", T0)
    await AuditLog(store).append("event", {"n": 1})
    await store.list_audit()
    await store.audit_head()
    halted = replace(RUN, status=RunStatus.HALTED, halt_reason=HaltReason.ERROR, ended_at=T0)
    dead = await store.halt_run(halted, {"steps": []})
    await store.add_dead_letter("r1", "error", {"steps": []})
    await store.get_dead_letter(dead.id)
    await store.list_dead_letters()
    await store.dead_letter_for_run("r1")
    await store.set_dead_letter_status(dead.id, "retried")
    await store.reopen_run("r1", topup={}, at=T0)
    await store.drop_leases(["me"])
    await store.runs_between(T0 - 1, T0 + 1)
    await store.run_origins(T0 - 1, T0 + 1)
    await store.step_stats(T0 - 1, T0 + 1)
    await store.purge(
        steps_before=None, artifacts_before=None, dead_letters_before=None, dry_run=True
    )
    await store.close()
    assert Store.__abstractmethods__ - recording.used == set()


async def test_what_is_used_again_reads_back_exact(sealed: SealedStore) -> None:
    await sealed.create_run(RUN)
    await sealed.add_approval(APPROVAL)
    assert await sealed.get_approval("apr_1") == APPROVAL
    assert await sealed.find_approvals(request_key="req-1") == [APPROVAL]
    assert await sealed.decide_approval("apr_1", "approved", by="a", at=T0 + 1, args=SECRET)
    decided = await sealed.get_approval("apr_1")
    assert decided is not None and decided.approved_args == SECRET
    record = IdempotencyRecord("k", "r1", {"rows": [SECRET]}, T0)
    assert await sealed.put_idempotent(record) == record
    assert await sealed.put_idempotent(replace(record, result="other")) == record  # first wins
    assert await sealed.get_idempotent("k") == record
    await sealed.put_artifact(ArtifactRecord("h", "r1", f"card {CARD}".encode(), "text/plain", T0))
    artifact = await sealed.get_artifact("h")
    assert artifact is not None and artifact.content == f"card {CARD}".encode()
    checkpoint = await sealed.add_checkpoint("r1", 3, {"memo": SECRET})
    assert checkpoint.state == {"memo": SECRET}
    assert (await sealed.get_checkpoint(checkpoint.id)).state == {"memo": SECRET}  # type: ignore[union-attr]
    proposal = ProposalRecord("p1", "r1", "support", "sql_write", SECRET, "write", T0, result=SSN)
    await sealed.add_proposal(proposal)
    assert await sealed.list_proposals() == [proposal]
    assert_no_raw(sealed.inner)
    await sealed.close()
    assert_no_raw(sealed.inner)


async def test_what_is_kept_for_people_is_redacted(sealed: SealedStore) -> None:
    run = replace(RUN, task=f"refund {EMAIL}")
    await sealed.create_run(run)
    await sealed.add_steps([STEP])
    sealed.queue_step(RUN, replace(STEP, seq=2, error=f"ValueError: bad card {CARD}"))
    (first, second) = await sealed.list_steps("r1")
    assert first.input == {
        "args": {"to": "[EMAIL_ADDRESS]", "card": "[CREDIT_CARD]", "ssn": "[US_SSN]"}
    }
    assert first.output == {"sent": "to [EMAIL_ADDRESS]"}
    assert second.error == "ValueError: bad card [CREDIT_CARD]"
    halted = replace(
        run, status=RunStatus.HALTED, halt_reason=HaltReason.ERROR, error=f"SSN {SSN}", ended_at=T0
    )
    dead = await sealed.halt_run(halted, {"message": f"SSN {SSN}", "steps": [{"input": SECRET}]})
    assert dead.packet["message"] == "SSN [US_SSN]"
    stored = await sealed.get_run("r1")
    assert stored is not None
    assert (stored.task, stored.error) == ("refund [EMAIL_ADDRESS]", "SSN [US_SSN]")
    entry = await AuditLog(sealed).append("approval.approved", {"args": SECRET}, "r1")
    assert entry.payload["args"]["card"] == "[CREDIT_CARD]"
    assert (await AuditLog(sealed).verify()).ok
    assert_no_raw(sealed.inner)


async def test_values_written_before_sealing_read_back_as_they_were(store: Store) -> None:
    plain = store
    await plain.create_run(RUN)
    await plain.put_idempotent(IdempotencyRecord("k", "r1", SECRET, T0))
    await plain.put_artifact(ArtifactRecord("h", "r1", b"raw", "text/plain", T0))
    sealed = SealedStore(plain, new_data_key().encode())
    assert (await sealed.get_idempotent("k")).result == SECRET  # type: ignore[union-attr]
    assert (await sealed.get_artifact("h")).content == b"raw"  # type: ignore[union-attr]
    await sealed.close()


async def test_another_key_does_not_open_the_values(store: Store) -> None:
    first = SealedStore(store, new_data_key().encode())
    await first.create_run(RUN)
    await first.put_idempotent(IdempotencyRecord("k", "r1", SECRET, T0))
    await first.close()
    other = SealedStore(reopened(store), new_data_key().encode())
    with pytest.raises(DataKeyError, match=f"does not open with {DATA_KEY_ENV}"):
        await other.get_idempotent("k")
    raw = await other.inner.get_idempotent("k")
    assert raw is not None and raw.result.startswith(PREFIX)
    await other.close()


def test_the_key_is_checked_and_the_error_says_how_to_make_one() -> None:
    key = new_data_key()
    assert data_key({DATA_KEY_ENV: f" {key}\n"}) == key.encode()
    with pytest.raises(DataKeyError, match=f"{DATA_KEY_ENV} is not set.*corral keys data-key"):
        data_key({})
    with pytest.raises(DataKeyError, match=f"{DATA_KEY_ENV} is not a valid key"):
        data_key({DATA_KEY_ENV: "hunter2"})
