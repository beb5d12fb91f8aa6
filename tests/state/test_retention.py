"""Store.purge, on each store: old records go, in chunks and for good; what a running run, an open
dead letter or a request sent again may still use stays; a dry run only counts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from corral.calls import HaltReason, RunStatus
from corral.state import (
    ApprovalRecord,
    ArtifactRecord,
    IdempotencyRecord,
    RunRecord,
    StepRecord,
    Store,
    postgres_observe,
    sqlite_retention,
)
from tests.state.conftest import FakeClock

DAY = 86400.0
NOW = 1_700_000_000.0
OLD, RECENT = NOW - 40 * DAY, NOW - 3600.0
MONTH_AGO = NOW - 30 * DAY


def run(run_id: str, **changes: object) -> RunRecord:
    base = RunRecord(run_id, "support", "operational", OLD, OLD, status=RunStatus.COMPLETED)
    return replace(base, **changes)  # type: ignore[arg-type]


def step(run_id: str, seq: int, at: float, text: str = "") -> StepRecord:
    return StepRecord(run_id, seq, "tool", "get_customer", {"q": text}, at, at + 1)


async def seed(store: Store, clock: FakeClock) -> None:
    """Four runs, each with an old step, checkpoint, idempotent result and artifact:
    done (completed, also a recent step), live (running), held (halted, dead letter open),
    gone (halted, dead letter dropped long ago)."""
    await store.create_run(run("done"))
    await store.create_run(run("live", status=RunStatus.RUNNING))
    for run_id in ("held", "gone"):
        await store.create_run(run(run_id, status=RunStatus.RUNNING))
        halted = run(run_id, status=RunStatus.HALTED, halt_reason=HaltReason.ERROR, ended_at=OLD)
        clock.now = OLD
        await store.halt_run(halted, {"steps": []})
    gone = await store.dead_letter_for_run("gone")
    assert gone is not None
    await store.set_dead_letter_status(gone.id, "dropped")
    clock.now = NOW
    for run_id in ("done", "live", "held", "gone"):
        await store.add_steps([step(run_id, 1, OLD, f"old-{run_id}")])
        await store.add_checkpoint(run_id, 1, {"at": "old"})
        await store.put_idempotent(IdempotencyRecord(f"{run_id}:1", run_id, "r", OLD))
        await store.put_artifact(ArtifactRecord(f"h-{run_id}", run_id, b"x", "text/plain", OLD))
    await store.add_steps([step("done", 2, RECENT)])


async def test_old_records_of_ended_runs_go_and_the_rest_stay(
    store: Store, clock: FakeClock
) -> None:
    await seed(store, clock)
    # The checkpoints were written at NOW: only the steps' cutoff far ahead reaches them.
    counts = await store.purge(
        steps_before=MONTH_AGO, artifacts_before=MONTH_AGO, dead_letters_before=None, dry_run=False
    )
    assert counts == {
        "steps": 2,
        "checkpoints": 0,
        "idempotency": 2,
        "artifacts": 2,
        "dead_letters": 0,
        "approval_answers": 0,
    }
    assert [s.seq for s in await store.list_steps("done")] == [2]  # the recent one stays
    assert await store.list_steps("gone") == []
    for kept in ("live", "held"):  # running, or waiting in the dead-letter queue
        assert len(await store.list_steps(kept)) == 1
        assert await store.get_idempotent(f"{kept}:1") is not None
        assert await store.get_artifact(f"h-{kept}") is not None
    assert await store.get_idempotent("done:1") is None
    assert await store.get_artifact("h-gone") is None
    assert len(await store.list_runs()) == 4  # runs (and their totals) are never purged


async def test_checkpoints_go_with_the_steps(store: Store, clock: FakeClock) -> None:
    await seed(store, clock)
    counts = await store.purge(
        steps_before=NOW + 1, artifacts_before=None, dead_letters_before=None, dry_run=False
    )
    assert counts["checkpoints"] == 2 and counts["artifacts"] == 0
    assert await store.last_checkpoint("done") is None
    assert await store.last_checkpoint("held") is not None


async def test_only_settled_dead_letters_past_the_age_go(store: Store, clock: FakeClock) -> None:
    await seed(store, clock)
    clock.now = RECENT
    await store.create_run(run("fresh"))
    fresh = await store.add_dead_letter("fresh", "error", {})
    await store.set_dead_letter_status(fresh.id, "retried")
    clock.now = NOW
    counts = await store.purge(
        steps_before=None, artifacts_before=None, dead_letters_before=MONTH_AGO, dry_run=False
    )
    assert counts["dead_letters"] == 1  # gone's, dropped 40 days ago
    assert [d.run_id for d in await store.list_dead_letters(status=None)] == ["held", "fresh"]


def approval(approval_id: str, request: str, **changes: object) -> ApprovalRecord:
    base = ApprovalRecord(
        approval_id, "done", 1, "send_email", {}, "approvals[0]", OLD, OLD + 60,
        request_key=request, answer={"text": "held"},
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


async def test_held_answers_go_once_every_approval_of_the_request_is_decided(
    store: Store, clock: FakeClock
) -> None:
    await seed(store, clock)
    await store.add_approval(approval("a1", "spent", status="approved", decided_at=OLD))
    await store.add_approval(approval("a2", "spent", status="rejected", decided_at=OLD))
    await store.add_approval(approval("b1", "waiting", status="approved", decided_at=OLD))
    await store.add_approval(approval("b2", "waiting"))  # pending: the answer is still due
    await store.add_approval(approval("c1", "recent", status="timeout", decided_at=NOW - 60))
    counts = await store.purge(
        steps_before=None,
        artifacts_before=None,
        dead_letters_before=None,
        answers_before=NOW - 600,
        dry_run=False,
    )
    assert counts["approval_answers"] == 2
    answers = {a.id: a.answer for a in await store.list_approvals()}
    assert answers == {
        "a1": None,
        "a2": None,
        "b1": {"text": "held"},
        "b2": {"text": "held"},
        "c1": {"text": "held"},
    }


async def test_a_dry_run_counts_and_removes_nothing(store: Store, clock: FakeClock) -> None:
    await seed(store, clock)
    cutoffs = {"steps_before": NOW + 1, "artifacts_before": NOW, "dead_letters_before": NOW}
    counted = await store.purge(**cutoffs, answers_before=NOW, dry_run=True)
    assert len(await store.list_steps("done")) == 2
    assert len(await store.list_dead_letters(status=None)) == 2
    assert await store.purge(**cutoffs, answers_before=NOW, dry_run=False) == counted
    assert counted["steps"] == 3 and counted["dead_letters"] == 1


async def test_big_purges_go_in_chunks(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_retention, "CHUNK", 3)
    monkeypatch.setattr(postgres_observe, "CHUNK", 3)
    await store.create_run(run("done"))
    await store.add_steps([step("done", seq, OLD) for seq in range(1, 11)])
    counts = await store.purge(
        steps_before=MONTH_AGO, artifacts_before=None, dead_letters_before=None, dry_run=False
    )
    assert counts["steps"] == 10 and await store.list_steps("done") == []


async def test_a_dry_run_leaves_the_file_as_it_was(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    await seed(sqlite_store, clock)
    cutoffs = {"steps_before": NOW + 1, "artifacts_before": NOW, "dead_letters_before": NOW}
    before = (tmp_path / "corral.db").read_bytes()
    await sqlite_store.purge(**cutoffs, answers_before=NOW, dry_run=True)
    assert (tmp_path / "corral.db").read_bytes() == before


async def test_what_is_purged_is_gone_from_the_file_and_its_wal(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    store = sqlite_store
    await store.create_run(run("done"))
    marker = "purge-me-" + "x" * 40
    await store.add_steps([step("done", 1, OLD, marker)])
    db = tmp_path / "corral.db"
    wal = tmp_path / "corral.db-wal"

    def on_disk() -> bytes:
        return db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")

    assert marker.encode() in on_disk()
    await store.purge(
        steps_before=MONTH_AGO, artifacts_before=None, dead_letters_before=None, dry_run=False
    )
    assert marker.encode() not in on_disk()
