"""`corral purge [--dry-run]` and `corral keys data-key` against a real SQLite file: what
goes, what a live cap or an open dead letter keeps, the audit chain before and after."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from corral.calls import HaltReason, RunStatus
from corral.cli import app
from corral.policy import load_policy
from corral.runtime.sealing import open_policy_store
from corral.state import RunRecord, SQLiteStore, StepRecord, Store
from corral.state.sealed import DATA_KEY_ENV, data_key
from corral.telemetry.audit import AuditLog
from tests.support import corral, example_policy, flat, runner

DAY = 86400.0
RETENTION = "retention: {steps: 30d, artifacts: 7d, dead_letters: 90d}"  # the example's


def policy_with(tmp_path: Path, retention: str = RETENTION) -> Path:
    return example_policy(tmp_path, {RETENTION: retention.rstrip("\n")})


def run(run_id: str, at: float, **changes: object) -> RunRecord:
    return RunRecord(run_id, "support", "operational", at, at, **changes)  # type: ignore[arg-type]


def step(run_id: str, seq: int, at: float) -> StepRecord:
    return StepRecord(run_id, seq, "tool", "get_customer", {"id": seq}, at, at + 1)


async def seed(store: Store, now: float) -> None:
    """Old steps of a completed run, a running one and one halted in the queue; a step of
    the completed run in today's window (the example's fleet and global caps are per day)."""
    old = now - 40 * DAY
    today = (now // DAY) * DAY
    await store.create_run(run("done", old, status=RunStatus.COMPLETED))
    await store.create_run(run("live", old))
    await store.create_run(run("held", old))
    halted = run("held", old, status=RunStatus.HALTED, halt_reason=HaltReason.ERROR, ended_at=old)
    await store.halt_run(halted, {"steps": []})
    await store.add_steps([step("done", 1, old), step("done", 2, today - 10)])
    await store.add_steps([step("done", 3, max(today, now - 5))])
    await store.add_steps([step("live", 1, old), step("held", 1, old)])
    audit = AuditLog(store)
    for n in range(3):
        await audit.append("event", {"n": n})


def open_sealed(policy: Path) -> Store:
    return open_policy_store(load_policy(policy, require_keys=False))


def prepare(policy: Path) -> None:
    async def go() -> None:
        async with open_sealed(policy) as store:
            await seed(store, time.time())

    asyncio.run(go())


def steps_left(policy: Path) -> dict[str, list[int]]:
    async def go() -> dict[str, list[int]]:
        async with SQLiteStore(policy.parent / "corral.db") as store:
            return {r: [s.seq for s in await store.list_steps(r)] for r in ("done", "live", "held")}

    return asyncio.run(go())


def test_purge_removes_what_retention_lets_go_and_keeps_the_rest(tmp_path: Path) -> None:
    policy = policy_with(tmp_path)
    prepare(policy)
    assert corral(policy, "audit", "verify").exit_code == 0
    dry = corral(policy, "purge", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert orjson.loads(dry.stdout)["steps"] == 1
    assert steps_left(policy)["done"] == [1, 2, 3]  # a dry run removes nothing
    done = corral(policy, "purge")
    assert done.exit_code == 0, done.output
    assert "Retention purge" in done.stdout and "steps" in done.stdout
    assert steps_left(policy) == {"done": [2, 3], "live": [1], "held": [1]}
    verified = corral(policy, "audit", "verify")
    assert verified.exit_code == 0, verified.output
    assert "4 entries" in verified.stdout  # 3 events, and the purge: a dry run is not audited


def test_a_short_retention_keeps_the_steps_of_the_current_cap_window(tmp_path: Path) -> None:
    # steps: 1s would remove every step; the fleet and global caps count today's.
    policy = policy_with(tmp_path, "retention: {steps: 1s}\n")
    prepare(policy)
    result = corral(policy, "purge", "--json")
    assert result.exit_code == 0, result.output
    assert steps_left(policy) == {"done": [3], "live": [1], "held": [1]}


def test_purge_is_audited_with_its_counts(tmp_path: Path) -> None:
    policy = policy_with(tmp_path)
    prepare(policy)
    assert corral(policy, "purge").exit_code == 0

    async def last_entry() -> tuple[str, object]:
        async with open_sealed(policy) as store:
            entry = (await store.list_audit())[-1]
            return entry.kind, entry.payload["counts"]

    kind, counts = asyncio.run(last_entry())
    assert kind == "retention.purged"
    assert counts == {
        "steps": 1,
        "checkpoints": 0,
        "idempotency": 0,
        "artifacts": 0,
        "dead_letters": 0,
        "approval_answers": 0,
    }


def test_purge_without_the_data_key_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = policy_with(tmp_path)
    monkeypatch.delenv(DATA_KEY_ENV)
    result = corral(policy, "purge")
    assert result.exit_code == 2
    assert f"{DATA_KEY_ENV} is not set" in flat(result.output)
    assert "corral keys data-key" in flat(result.output)


def test_keys_data_key_prints_a_key_that_opens() -> None:
    result = runner.invoke(app, ["keys", "data-key"])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert data_key({DATA_KEY_ENV: key}) == key.encode()
