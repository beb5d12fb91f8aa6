"""Per agent type figures: build_report on the fleet of test_graph, read back from a real
SQLite file (and through a SealedStore), checked against what was recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from corral.calls import HaltReason, RunStatus
from corral.guards.storage import redact_json
from corral.policy import FAILURE_OUTCOMES, AgentType
from corral.state import SQLiteStore, Store
from corral.state.sealed import SealedStore, new_data_key
from corral.state.store import StepStats
from corral.telemetry.report import Hop, Report, TypeReport, build_report, to_json
from tests.telemetry.test_graph import UNTIL, T, run, seed_fleet

# The fleet's types as the policy has them: research fails only on "no_sources" (so r1's
# "failed" is a success), operational keeps the defaults; "legacy" is no longer in it.
AGENT_TYPES = {
    "operational": AgentType(),
    "research": AgentType(failure_outcomes=("no_sources",)),
}

OPERATIONAL = TypeReport(
    agent_type="operational",
    in_policy=True,
    runs=4,  # p1, p2, p3, p4 (o0 is older, "late" after the window)
    ended=3,  # p4 still runs
    succeeded=1,  # p1; p2 and p3 halted
    cost_usd=0.9375,  # 0.5 + 0.25 + 0.125 + 0.0625
    p50_s=4.0,  # of 1.5 (p3), 4 (p2), 8 (p1: 10s less 2s waiting for a human)
    p95_s=8.0,
    halt_reasons=((HaltReason.BUDGET_COST, 2),),
    slowest_hop=Hop("lookup", "tool", 4.75),
)
RESEARCH = TypeReport(
    agent_type="research",
    in_policy=True,
    runs=3,
    ended=3,
    succeeded=1,  # r1; r2 ended "no_sources", r3 halted
    cost_usd=0.4375,
    p50_s=3.0,  # of 2, 3, 6
    p95_s=6.0,
    halt_reasons=((HaltReason.LOOP_REPEAT, 1),),
    slowest_hop=Hop("fetch", "tool", 4.0),
)
LEGACY = TypeReport(
    agent_type="legacy",
    in_policy=False,
    runs=3,
    ended=3,
    succeeded=2,  # w2 and w3; w1 "escalated", a default failure outcome
    cost_usd=0.4375,
    p50_s=2.0,  # of 1, 2, 4
    p95_s=4.0,
    halt_reasons=(),
    slowest_hop=Hop("gpt-4o", "llm", 2.5),
)


async def read_report(store: Store) -> Report:
    runs = await store.runs_between(T, UNTIL)
    steps = await store.step_stats(T, UNTIL, by="agent_type")
    return build_report(runs, steps, AGENT_TYPES, since=T, until=UNTIL)


async def test_the_fleet_report(fleet: SQLiteStore) -> None:
    report = await read_report(fleet)
    assert report.types == (LEGACY, OPERATIONAL, RESEARCH)
    assert [t.success_rate for t in report.types] == [2 / 3, 1 / 3, 1 / 3]
    assert [t.cost_per_success for t in report.types] == [0.21875, 0.9375, 0.4375]


async def test_a_sealed_store_reads_the_same(tmp_path: Path) -> None:
    class Recording:
        def __init__(self, inner: Store) -> None:
            self.inner, self.used = inner, set[str]()

        def __getattr__(self, name: str) -> Any:
            self.used.add(name)
            return getattr(self.inner, name)

    recording = Recording(SQLiteStore(tmp_path / "corral.db"))
    store = SealedStore(recording, new_data_key().encode(), redact_json)  # type: ignore[arg-type]
    await seed_fleet(store)
    assert (await read_report(store)).types == (LEGACY, OPERATIONAL, RESEARCH)
    assert len(await store.run_origins(T, UNTIL)) == 8
    await store.close()
    assert {"runs_between", "step_stats", "run_origins"} <= recording.used


def test_no_success_has_no_cost_per_success() -> None:
    runs = [
        run("a", "bot", "operational", 0, 2.0, 0.5, status=RunStatus.HALTED, halt_reason="timeout"),
        run("b", "bot", "operational", 1, 1.0, 0.25, outcome="abandoned"),
        run("c", "bot", "operational", 2, None, 0.125),
    ]
    (only,) = build_report(runs, [], AGENT_TYPES, since=T, until=UNTIL).types
    assert (only.runs, only.ended, only.succeeded) == (3, 2, 0)
    assert only.success_rate == 0.0 and only.cost_per_success is None
    assert only.cost_usd == 0.875
    assert only.halt_reasons == (("timeout", 1),) and only.slowest_hop is None


def test_a_type_with_only_running_runs_has_no_rate_nor_latency() -> None:
    (only,) = build_report(
        [run("a", "bot", "research", 0, None, 0.5)], [], AGENT_TYPES, since=T, until=UNTIL
    ).types
    assert only.success_rate is None and only.p50_s is None and only.p95_s is None
    assert only.cost_per_success is None


def test_unknown_types_use_the_default_failure_outcomes() -> None:
    runs = [
        run(f"r{i}", "bot", "gone", i, 1.0, 0.0, outcome=outcome)
        for i, outcome in enumerate([*FAILURE_OUTCOMES, "no_sources", None])
    ]
    (only,) = build_report(runs, [], AGENT_TYPES, since=T, until=UNTIL).types
    assert not only.in_policy and (only.ended, only.succeeded) == (5, 2)


def test_halt_reasons_most_frequent_first_and_the_slowest_hop_by_p95() -> None:
    runs = [
        run(str(i), "bot", "operational", i, 1.0, 0.0, status=RunStatus.HALTED, halt_reason=why)
        for i, why in enumerate(["timeout", "loop.repeat", "timeout", "budget.cost", "loop.repeat"])
    ]
    steps = [
        StepStats("operational", "llm", "gpt-4o", 9, 0, 1.0, 3.5),
        StepStats("operational", "tool", "search", 2, 1, 0.0, 7.25),
        StepStats("research", "tool", "slower", 2, 1, 0.0, 9.0),  # another type's
    ]
    report = build_report(runs, steps, AGENT_TYPES, since=T, until=UNTIL)
    operational, research = report.types
    assert operational.halt_reasons == (("loop.repeat", 2), ("timeout", 2), ("budget.cost", 1))
    assert operational.slowest_hop == Hop("search", "tool", 7.25)
    # A type with steps in the window but no runs in it still shows, with its hop.
    assert (research.runs, research.slowest_hop) == (0, Hop("slower", "tool", 9.0))


async def test_json(fleet: SQLiteStore) -> None:
    shown = to_json(await read_report(fleet))
    assert shown["since"] == T and shown["until"] == UNTIL
    assert shown["agent_types"][1] == {
        "agent_type": "operational", "in_policy": True, "runs": 4, "ended": 3,
        "succeeded": 1, "success_rate": 1 / 3, "cost_usd": 0.9375,
        "cost_per_success": 0.9375, "p50_s": 4.0, "p95_s": 8.0,
        "halt_reasons": [{"reason": "budget.cost", "runs": 2}],
        "slowest_hop": {"name": "lookup", "kind": "tool", "p95_s": 4.75},
    }  # fmt: skip
    assert shown["agent_types"][0]["cost_per_success"] == 0.21875
