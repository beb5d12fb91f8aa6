"""The agent dependency graph: the store's window reads (runs_between, run_origins,
step_stats) on a real SQLite file, and build_graph and its renderers on what they read.

`seed_fleet` records one fleet whose figures every test of graph and report checks:
durations and costs are binary fractions, so sums and percentiles compare exactly.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import replace

import pytest

from corral.calls import HaltReason, RunStatus
from corral.state import RunRecord, SQLiteStore, StepRecord, StepStatus, Store
from corral.state.store import RunOrigin, StepStats, nearest_rank
from corral.telemetry.graph import Edge, Graph, build_graph, to_dot, to_json, to_mermaid

T = 1_700_000_000.0  # the window's start; integral, so offsets in quarters stay exact
DAY = 86400.0
UNTIL = T + DAY


def run(
    run_id: str,
    agent: str,
    agent_type: str,
    at: float,
    took: float | None,
    cost: float,
    **changes: object,
) -> RunRecord:
    """A run created `at` seconds into the window that ended `took` seconds later
    (completed unless `changes` say otherwise; still running if `took` is None)."""
    record = RunRecord(run_id, agent, agent_type, T + at, T + at, cost_usd=cost)
    if took is not None:
        record = replace(record, status=RunStatus.COMPLETED, ended_at=T + at + took)
    return replace(record, **changes)  # type: ignore[arg-type]


def halted(reason: str) -> dict[str, object]:
    return {"status": RunStatus.HALTED, "halt_reason": reason}


def step(
    run_id: str,
    seq: int,
    kind: str,
    name: str,
    at: float,
    took: float,
    status: StepStatus = "ok",
    cost: float = 0.0,
    model: str | None = None,
) -> StepRecord:
    return StepRecord(
        run_id, seq, kind, name, {"n": seq}, T + at, T + at + took,  # type: ignore[arg-type]
        status=status, cost_usd=cost, model_used=model,
    )  # fmt: skip


# planner opens session s1, spawns researchers (r1, r2 of p1; r3 of p2); writer joins s1;
# editor opened s3 two days before the window and writer joined it inside; r2 is in s1 as
# well, but counts on its parent's edge alone.
RUNS: tuple[RunRecord, ...] = (
    run("o0", "editor", "operational", -2 * DAY, 1.0, 1.0, session="s3"),
    run("p1", "planner", "operational", 0, 10.0, 0.5, session="s1", waiting_s=2.0),
    run("r1", "researcher", "research", 1, 6.0, 0.25, parent_run_id="p1", outcome="failed"),
    run("r2", "researcher", "research", 2, 3.0, 0.125, parent_run_id="p1", session="s1",
        outcome="no_sources"),
    run("w1", "writer", "legacy", 5, 4.0, 0.25, session="s1", outcome="escalated"),
    run("w2", "writer", "legacy", 20, 1.0, 0.125, session="s1"),
    run("p2", "planner", "operational", 100, 4.0, 0.25, session="s2",
        **halted(HaltReason.BUDGET_COST)),
    run("r3", "researcher", "research", 101, 2.0, 0.0625, parent_run_id="p2",
        **halted(HaltReason.LOOP_REPEAT)),
    run("p3", "planner", "operational", 200, 1.5, 0.125, **halted(HaltReason.BUDGET_COST)),
    run("p4", "planner", "operational", 300, None, 0.0625),
    run("w3", "writer", "legacy", 400, 2.0, 0.0625, session="s3", outcome={"words": 300}),
    run("late", "planner", "operational", DAY + 5, 1.0, 8.0),  # after the window
)  # fmt: skip

STEPS: tuple[StepRecord, ...] = (
    step("o0", 1, "llm", "default", -2 * DAY, 0.5, model="gpt-4o", cost=4.0),  # before it
    step("o0", 2, "tool", "notify", 50, 0.75),  # the run is older, the step in the window
    step("p1", 1, "llm", "default", 0.5, 1.0, cost=0.25, model="gpt-4o"),
    step("p1", 2, "llm", "default", 3, 2.0, "error", model="gpt-4o"),
    step("p1", 3, "tool", "search", 6, 0.5),
    step("p1", 4, "tool", "search", 7, 3.0, "halted"),
    step("p1", 5, "tool", "search", 9.5, 0.25, "replayed"),
    step("p2", 1, "llm", "claude-x", 100.5, 0.5, cost=0.125),  # no model_used: its name
    step("r1", 1, "llm", "default", 1.5, 0.5, cost=0.25, model="gpt-4o-mini"),
    step("r1", 2, "tool", "fetch", 2, 4.0, "interrupted"),
    step("r2", 1, "tool", "fetch", 2.5, 0.5),
    step("w1", 1, "llm", "default", 6, 2.5, cost=0.125, model="gpt-4o"),
    # 20 lookups taking 0.25s .. 5s, all but every fifth failing: the p95 is the 19th, 4.75s
    *(
        step("p3", i, "tool", "lookup", 200 + i * 0.0625, i * 0.25, "error" if i % 5 else "ok")
        for i in range(1, 21)
    ),
    step("late", 1, "llm", "default", DAY + 6, 1.0, cost=8.0, model="gpt-4o"),
)

EDGES = [
    # source, target, kind, calls, errors, p95_s, cost_usd
    ("editor", "writer", "session", 1, 0, 2.0, 0.0625),
    ("editor", "notify", "tool", 1, 0, 0.75, 0.0),
    ("planner", "researcher", "parent", 3, 1, 6.0, 0.4375),
    ("planner", "writer", "session", 2, 0, 4.0, 0.375),
    ("planner", "claude-x", "llm", 1, 0, 0.5, 0.125),
    ("planner", "gpt-4o", "llm", 2, 1, 2.0, 0.25),
    ("planner", "lookup", "tool", 20, 16, 4.75, 0.0),
    ("planner", "search", "tool", 3, 1, 3.0, 0.0),
    ("researcher", "gpt-4o-mini", "llm", 1, 0, 0.5, 0.25),
    ("researcher", "fetch", "tool", 2, 1, 4.0, 0.0),
    ("writer", "gpt-4o", "llm", 1, 0, 2.5, 0.125),
]


async def seed_fleet(store: Store, at: float = T) -> None:
    """RUNS and STEPS, shifted to a window starting `at`."""
    shift = at - T

    def moved_run(r: RunRecord) -> RunRecord:
        ended = None if r.ended_at is None else r.ended_at + shift
        return replace(r, created_at=r.created_at + shift, updated_at=r.updated_at + shift,
                       ended_at=ended)  # fmt: skip

    for record in RUNS:  # parents first: parent_run_id references them
        await store.create_run(moved_run(record))
    await store.add_steps(
        [replace(s, started_at=s.started_at + shift, ended_at=s.ended_at + shift) for s in STEPS]
    )


def edge_rows(edges: Sequence[Edge]) -> list[tuple[object, ...]]:
    return [(e.source, e.target, e.kind, e.calls, e.errors, e.p95_s, e.cost_usd) for e in edges]


async def read_graph(store: Store, agent: str | None = None) -> Graph:
    runs = await store.runs_between(T, UNTIL)
    origins = await store.run_origins(T, UNTIL)
    steps = await store.step_stats(T, UNTIL)
    return build_graph(runs, origins, steps, since=T, until=UNTIL, agent=agent)


# percentiles


@pytest.mark.parametrize(
    ("values", "pct", "expected"),
    [
        ([], 95, None),
        ([7.0], 95, 7.0),
        ([4.0, 1.0, 3.0, 2.0], 50, 2.0),
        ([4.0, 1.0, 3.0, 2.0], 95, 4.0),
        ([i * 0.25 for i in range(20, 0, -1)], 95, 4.75),
        ([i * 0.25 for i in range(1, 21)], 1, 0.25),
    ],
)
def test_nearest_rank(values: list[float], pct: int, expected: float | None) -> None:
    assert nearest_rank(values, pct) == expected


# the store's reads


async def test_runs_between_is_the_window_oldest_first(fleet: SQLiteStore) -> None:
    runs = await fleet.runs_between(T, UNTIL)
    assert [r.id for r in runs] == ["p1", "r1", "r2", "w1", "w2", "p2", "r3", "p3", "p4", "w3"]
    assert runs[0] == RUNS[1]
    assert [r.id for r in await fleet.runs_between(T + 5, T + 100)] == ["w1", "w2"]
    assert await fleet.runs_between(T + 5, T + 5) == []
    with pytest.raises(ValueError, match="must not end before it starts"):
        await fleet.runs_between(UNTIL, T)


async def test_run_origins_name_the_parent_and_the_session_opener(fleet: SQLiteStore) -> None:
    origins = await fleet.run_origins(T, UNTIL)
    assert origins == [
        RunOrigin("p1", None, "planner"),
        RunOrigin("r1", "planner", None),
        RunOrigin("r2", "planner", "planner"),
        RunOrigin("w1", None, "planner"),
        RunOrigin("w2", None, "planner"),
        RunOrigin("p2", None, "planner"),
        RunOrigin("r3", "planner", None),
        RunOrigin("w3", None, "editor"),  # s3 was opened before the window
    ]


async def test_each_read_is_one_statement(fleet: SQLiteStore) -> None:
    statements: list[str] = []

    def trace(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(statements.append)

    await fleet._run(trace)
    await fleet.step_stats(T, UNTIL)
    await fleet.run_origins(T, UNTIL)
    await fleet.runs_between(T, UNTIL)
    assert len(statements) == 3


# the graph


async def test_the_fleet_graph_has_exactly_its_edges(fleet: SQLiteStore) -> None:
    graph = await read_graph(fleet)
    assert edge_rows(graph.edges) == EDGES
    by_pair = {(e.source, e.target): e for e in graph.edges}
    assert by_pair[("planner", "lookup")].error_rate == 0.8
    assert by_pair[("planner", "researcher")].error_rate == pytest.approx(1 / 3)
    assert by_pair[("planner", "writer")].error_rate == 0.0
    assert [(n.type, n.name) for n in graph.nodes] == [
        ("agent", "editor"), ("agent", "planner"), ("agent", "researcher"), ("agent", "writer"),
        ("model", "claude-x"), ("model", "gpt-4o"), ("model", "gpt-4o-mini"),
        ("tool", "fetch"), ("tool", "lookup"), ("tool", "notify"), ("tool", "search"),
    ]  # fmt: skip


async def test_agent_restricts_to_the_edges_touching_it(fleet: SQLiteStore) -> None:
    writer = await read_graph(fleet, agent="writer")
    assert edge_rows(writer.edges) == [EDGES[0], EDGES[3], EDGES[10]]
    assert {n.id for n in writer.nodes} == {
        "agent:editor", "agent:planner", "agent:writer", "model:gpt-4o",
    }  # fmt: skip
    # A tool named like an agent is not that agent.
    nobody = await read_graph(fleet, agent="search")
    assert nobody.edges == () and [n.id for n in nobody.nodes] == ["agent:search"]


def test_a_child_run_still_running_has_no_latency_yet() -> None:
    parent = run("a", "boss", "t", 0, 5.0, 0.0)
    child = run("b", "worker", "t", 1, None, 0.5, parent_run_id="a")
    graph = build_graph([parent, child], [RunOrigin("b", "boss", None)], [], since=T, until=UNTIL)
    assert edge_rows(graph.edges) == [("boss", "worker", "parent", 1, 0, None, 0.5)]


def test_sessions_of_one_agent_make_no_edge() -> None:
    runs = [run("a", "solo", "t", 0, 1.0, 0.0, session="s"), run("b", "solo", "t", 1, 1.0, 0.0)]
    origins = [RunOrigin("a", None, "solo"), RunOrigin("b", None, "solo")]
    graph = build_graph(runs, origins, [], since=T, until=UNTIL)
    assert graph.edges == () and [n.id for n in graph.nodes] == ["agent:solo"]


# rendering


async def test_json_names_nodes_by_type(fleet: SQLiteStore) -> None:
    shown = to_json(await read_graph(fleet))
    assert shown["since"] == T and shown["until"] == UNTIL
    assert {"id": "tool:lookup", "name": "lookup", "type": "tool"} in shown["nodes"]
    assert shown["edges"][2] == {
        "source": "agent:planner", "target": "agent:researcher", "kind": "parent",
        "calls": 3, "errors": 1, "error_rate": 1 / 3, "p95_s": 6.0, "cost_usd": 0.4375,
    }  # fmt: skip


async def test_mermaid_has_a_node_per_name_and_an_edge_per_edge(fleet: SQLiteStore) -> None:
    text = to_mermaid(await read_graph(fleet))
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert '    n1["planner"]:::agent' in lines
    assert '    n5(["gpt-4o"]):::model' in lines
    assert '    n8[["lookup"]]:::tool' in lines
    assert '    n1 -->|"20 calls, 80% errors, p95 4.75s, $0.0000"| n8' in lines
    assert '    n1 -.->|"session: 2 runs, 0% errors, p95 4.00s, $0.3750"| n3' in lines
    assert len([line for line in lines if "->" in line]) == len(EDGES)


def test_mermaid_and_dot_escape_names() -> None:
    assert build_graph([], [], [], since=T, until=UNTIL) == Graph(T, UNTIL, (), ())
    runs = [run("r", 'a"b', "t", 0, 1.0, 0.0)]
    stats = [StepStats('a"b', "tool", "x\\y", 1, 1, 0.0, 0.5)]
    built = build_graph(runs, [], stats, since=T, until=UNTIL)
    assert '    n0["a#quot;b"]:::agent' in to_mermaid(built)
    dot = to_dot(built)
    assert '"agent:a\\"b" [label="a\\"b", shape=box];' in dot
    assert '"tool:x\\\\y" [label="x\\\\y", shape=component];' in dot


async def test_dot_is_a_digraph_of_every_edge(fleet: SQLiteStore) -> None:
    dot = to_dot(await read_graph(fleet))
    assert dot.startswith("digraph corral {\n    rankdir=LR;") and dot.endswith("}\n")
    assert (
        '"agent:planner" -> "agent:writer" [label="session\\n2 runs\\n0% errors\\np95 4.00s'
        '\\n$0.3750", style=dashed];' in dot
    )
    assert (
        '"agent:planner" -> "tool:search" [label="3 calls\\n33% errors\\np95 3.00s\\n$0.0000",'
        " color=red];" in dot
    )
    assert len(re.findall(r" -> ", dot)) == len(EDGES)
