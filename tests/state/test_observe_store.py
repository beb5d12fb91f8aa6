"""The reads of `corral graph` and `corral report` on each store: the same windows, sums,
orders and nearest-rank percentiles whichever store answers."""

from __future__ import annotations

import random

import pytest

from corral.state import RunRecord, StepRecord, Store
from corral.state.store import STEP_PERCENTILE, RunOrigin, StepStats, nearest_rank
from tests.telemetry.test_graph import DAY, RUNS, UNTIL, T, seed_fleet


async def test_runs_between_is_the_window_oldest_first(store: Store) -> None:
    await seed_fleet(store)
    runs = await store.runs_between(T, UNTIL)
    assert [r.id for r in runs] == ["p1", "r1", "r2", "w1", "w2", "p2", "r3", "p3", "p4", "w3"]
    assert runs[0] == RUNS[1]
    assert [r.id for r in await store.runs_between(T + 5, T + 100)] == ["w1", "w2"]
    assert await store.runs_between(T + 5, T + 5) == []
    with pytest.raises(ValueError, match="must not end before it starts"):
        await store.runs_between(UNTIL, T)


async def test_run_origins_name_the_parent_and_the_session_opener(store: Store) -> None:
    await seed_fleet(store)
    assert await store.run_origins(T, UNTIL) == [
        RunOrigin("p1", None, "planner"),
        RunOrigin("r1", "planner", None),
        RunOrigin("r2", "planner", "planner"),
        RunOrigin("w1", None, "planner"),
        RunOrigin("w2", None, "planner"),
        RunOrigin("p2", None, "planner"),
        RunOrigin("r3", "planner", None),
        RunOrigin("w3", None, "editor"),  # s3 was opened before the window
    ]
    with pytest.raises(ValueError, match="must not end before it starts"):
        await store.run_origins(UNTIL, T)


async def test_step_stats_sum_in_the_window_per_agent_and_hop(store: Store) -> None:
    await seed_fleet(store)
    assert await store.step_stats(T, UNTIL) == [
        StepStats("editor", "tool", "notify", 1, 0, 0.0, 0.75),
        StepStats("planner", "llm", "claude-x", 1, 0, 0.125, 0.5),
        StepStats("planner", "llm", "gpt-4o", 2, 1, 0.25, 2.0),
        StepStats("planner", "tool", "lookup", 20, 16, 0.0, 4.75),
        StepStats("planner", "tool", "search", 3, 1, 0.0, 3.0),
        StepStats("researcher", "llm", "gpt-4o-mini", 1, 0, 0.25, 0.5),
        StepStats("researcher", "tool", "fetch", 2, 1, 0.0, 4.0),
        StepStats("writer", "llm", "gpt-4o", 1, 0, 0.125, 2.5),
    ]
    by_type = await store.step_stats(T, UNTIL, by="agent_type")
    assert [(s.group, s.hop, s.calls, s.p95_s) for s in by_type] == [
        ("legacy", "gpt-4o", 1, 2.5),
        ("operational", "claude-x", 1, 0.5),
        ("operational", "gpt-4o", 2, 2.0),
        ("operational", "lookup", 20, 4.75),
        ("operational", "notify", 1, 0.75),
        ("operational", "search", 3, 3.0),
        ("research", "gpt-4o-mini", 1, 0.5),
        ("research", "fetch", 2, 4.0),
    ]
    whole = await store.step_stats(T - 3 * DAY, T + 3 * DAY)
    assert [(s.group, s.hop, s.calls, s.cost_usd) for s in whole if s.hop == "gpt-4o"] == [
        ("editor", "gpt-4o", 1, 4.0),
        ("planner", "gpt-4o", 3, 8.25),
        ("writer", "gpt-4o", 1, 0.125),
    ]
    assert await store.step_stats(T + 2 * DAY, T + 3 * DAY) == []
    with pytest.raises(ValueError, match="by must be one of agent, agent_type"):
        await store.step_stats(T, UNTIL, by="task")  # type: ignore[arg-type]


async def test_the_percentile_is_the_nearest_rank_for_every_count(store: Store) -> None:
    """Groups of 1 to 60 steps with random (and tied) durations: the store's p95 is
    nearest_rank's, value for value."""
    draw = random.Random(7)
    expected: dict[str, float | None] = {}
    for n in range(1, 61):
        run_id = f"run-{n:02d}"
        await store.create_run(RunRecord(run_id, f"agent-{n:02d}", "t", T, T))
        durations = [draw.choice([0.25, 0.5, 1.0, draw.random() * 10]) for _ in range(n)]
        expected[f"agent-{n:02d}"] = nearest_rank(durations, STEP_PERCENTILE)
        await store.add_steps(
            [
                StepRecord(run_id, seq, "tool", "probe", {}, T + seq, T + seq + took)
                for seq, took in enumerate(durations, start=1)
            ]
        )
    stats = await store.step_stats(T, UNTIL)
    assert {s.group: s.p95_s for s in stats} == pytest.approx(expected, abs=1e-6)
    assert [s.calls for s in stats] == list(range(1, 61))


async def test_groups_and_hops_are_ordered_bytewise(store: Store) -> None:
    # Upper case before lower case and "_" after letters, as SQLite orders text, whatever
    # the PostgreSQL database's collation says.
    for agent in ("beta", "Zed", "alpha", "a_b", "aB"):
        await store.create_run(RunRecord(f"run-{agent}", agent, "t", T, T))
        await store.add_steps(
            [
                StepRecord(f"run-{agent}", seq, "tool", hop, {}, T + 1, T + 2)
                for seq, hop in enumerate(("search", "Search", "_internal"), start=1)
            ]
        )
    stats = await store.step_stats(T, UNTIL)
    groups = sorted({s.group for s in stats}, key=str.encode)
    assert groups == ["Zed", "aB", "a_b", "alpha", "beta"]
    assert [(s.group, s.hop) for s in stats] == [
        (group, hop) for group in groups for hop in ("Search", "_internal", "search")
    ]
