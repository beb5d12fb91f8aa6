"""The store's side of recovery: write-ahead records, leases, claims, spending sums."""

from __future__ import annotations

import asyncio

import pytest

from corral.calls import RunStatus
from corral.state import (
    ConstraintError,
    InflightRecord,
    LeaseRecord,
    RunRecord,
    Spending,
    StepRecord,
    Store,
)

T0 = 1_700_000_000.0


def run(run_id: str, **changes: object) -> RunRecord:
    fields: dict[str, object] = {
        "id": run_id, "agent": "support", "agent_type": "operational",
        "created_at": T0, "updated_at": T0, **changes,
    }  # fmt: skip
    return RunRecord(**fields)  # type: ignore[arg-type]


def inflight(call_id: str, run_id: str = "r1", owner: str = "a") -> InflightRecord:
    return InflightRecord(call_id, run_id, owner, 1, "llm", "default", T0, 10, 20, 0.01)


def step(run_id: str, seq: int, **changes: object) -> StepRecord:
    fields: dict[str, object] = {
        "run_id": run_id, "seq": seq, "kind": "llm", "name": "default", "input": {},
        "started_at": T0 + seq, "ended_at": T0 + seq, **changes,
    }  # fmt: skip
    return StepRecord(**fields)  # type: ignore[arg-type]


async def test_a_step_settles_its_write_ahead_record_exactly_once(store: Store) -> None:
    await store.create_run(run("r1", owner="a"))
    await store.begin_call(inflight("a/1"))
    assert [r.id for r in await store.inflight("r1")] == ["a/1"]
    await store.record_step(run("r1", steps=1), step("r1", 1), settles="a/1")
    assert await store.inflight("r1") == []
    # A second step claiming to settle the same call is refused, and nothing of it lands.
    with pytest.raises(ConstraintError, match="was settled already"):
        await store.record_step(run("r1", steps=2), step("r1", 2), settles="a/1")
    assert [s.seq for s in await store.list_steps("r1")] == [1]


async def test_begin_call_refuses_an_unknown_run_and_a_taken_id(store: Store) -> None:
    with pytest.raises(ConstraintError, match="begin_call 'a/1' of run 'ghost'"):
        await store.begin_call(inflight("a/1", "ghost"))
    await store.create_run(run("r1"))
    await store.begin_call(inflight("a/1"))
    with pytest.raises(ConstraintError, match="UNIQUE"):
        await store.begin_call(inflight("a/1"))


async def test_many_write_ahead_records_at_once_share_commits(store: Store) -> None:
    await store.create_run(run("r1"))
    await asyncio.gather(*(store.begin_call(inflight(f"a/{n}")) for n in range(200)))
    assert len(await store.inflight("r1")) == 200


async def test_only_one_of_two_racing_claims_wins(store: Store) -> None:
    for owner in ("dead", "b", "c", "d"):  # a claimer holds a lease, as a supervisor does
        await store.renew_lease(LeaseRecord(owner, "h", 1, T0, T0))
    await store.create_run(run("r1", owner="dead"))
    claims = await asyncio.gather(
        store.claim_run("r1", "b", dead={"dead"}), store.claim_run("r1", "c", dead={"dead"})
    )
    winners = [c.owner for c in claims if c is not None]
    assert len(winners) == 1
    # The winner is live now: nobody else claims it.
    assert await store.claim_run("r1", "d", dead={"dead"}) is None


async def test_orphans_are_the_running_runs_of_gone_owners(store: Store) -> None:
    await store.renew_lease(LeaseRecord("live", "h", 1, T0, T0))
    await store.renew_lease(LeaseRecord("dead", "h", 2, T0, T0))
    await store.create_run(run("mine", owner="live"))
    await store.create_run(run("lost", owner="dead"))
    await store.create_run(run("unleased", owner="never-leased"))
    await store.create_run(run("waiting"))  # unowned: recovered already
    await store.create_run(run("over", owner="dead", status=RunStatus.COMPLETED))
    orphans = [r.id for r in await store.orphaned_runs({"dead"})]
    assert orphans == ["lost", "unleased"]
    assert await store.claim_run("waiting", "x", dead=set(), unowned=False) is None
    claimed = await store.claim_run("waiting", "x", dead=set())
    assert claimed is not None and claimed.owner == "x"
    await store.drop_leases(["dead"])
    assert [lease.owner for lease in await store.list_leases()] == ["live"]


async def test_spending_sums_sessions_and_windows_as_the_counters_do(
    store: Store,
) -> None:
    await store.create_run(run("a", session="s", cost_usd=0.5, steps=2, input_tokens=7))
    await store.create_run(run("b", session="s", agent="other", cost_usd=0.25, steps=1))
    await store.create_run(run("c", session="t", cost_usd=1.0, steps=1, agent_type="research"))
    assert await store.spending(session="s", agents=["support"]) == Spending(0.5, 7, 2, 0)
    assert await store.spending(session="s", agents=["support", "other"]) == Spending(0.75, 7, 3, 0)
    await store.add_steps(
        [
            step("a", 1, cost_usd=0.1, input_tokens=3, output_tokens=2),
            step("a", 2, kind="tool", status="interrupted"),
            step("a", 3, status="error", cost_usd=0.05, output_tokens=4),  # a cut stream
            step("c", 1, cost_usd=0.2, started_at=T0 + 100),
        ]
    )
    window = await store.spending(since=T0)
    assert window == Spending(pytest.approx(0.35), 9, 3, 1)  # type: ignore[arg-type]
    assert await store.spending(since=T0, agent_type="research") == Spending(0.2, 0, 1, 0)
    assert await store.spending(since=T0 + 50) == Spending(0.2, 0, 1, 0)
