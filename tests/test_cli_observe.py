"""`corral graph` and `corral report` against a real SQLite file opened as Corral opens it
(the example policy seals its store): the fleet of tests/telemetry/test_graph.py recorded
an hour ago, its figures read back exactly."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from corral import cli_observe
from corral.state import RunRecord
from tests.support import corral, example_policy, flat, on_store
from tests.telemetry.test_graph import EDGES, seed_fleet

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# research fails only on "no_sources"; the fleet's "legacy" type is not in the policy.
RESEARCH = {"  research:\n": "  research:\n    failure_outcomes: [no_sources]\n"}


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return example_policy(tmp_path, RESEARCH)


@pytest.fixture
def fleet(policy: Path) -> Path:
    """The policy, its store holding the fleet, whose window started an hour ago."""
    start = float(int(time.time()) - 3600)
    on_store(policy, lambda store: seed_fleet(store, start))
    return policy


def loaded(stdout: str) -> Any:
    return orjson.loads(stdout)


def fits(output: str) -> None:
    assert max(len(line) for line in output.splitlines()) <= 80, output


# corral graph


def test_graph_json_has_exactly_the_fleet_edges(fleet: Path) -> None:
    result = corral(fleet, "graph", "--format", "json")
    assert result.exit_code == 0, result.output
    shown = loaded(result.stdout)
    assert shown["until"] - shown["since"] == 86400.0
    types = {node["id"].split(":", 1)[1]: node["type"] for node in shown["nodes"]}
    edges = [
        (e["source"], e["target"], e["kind"], e["calls"], e["errors"], e["p95_s"], e["cost_usd"])
        for e in shown["edges"]
    ]
    assert edges == [
        (f"agent:{s}", f"{types[t]}:{t}", kind, calls, errors, p95, cost)
        for s, t, kind, calls, errors, p95, cost in EDGES
    ]
    rates = {(e["source"], e["target"]): e["error_rate"] for e in shown["edges"]}
    assert rates[("agent:planner", "tool:lookup")] == 0.8
    assert rates[("agent:researcher", "tool:fetch")] == 0.5


def test_graph_tree_is_the_default_and_reads_at_80_columns(fleet: Path) -> None:
    result = corral(fleet, "graph")
    assert result.exit_code == 0, result.output
    fits(result.output)
    lines = result.output.splitlines()
    assert lines[0].startswith("Agent graph, last 24h (since ")
    roots = [line[4:] for line in lines if line.startswith(("├── ", "└── "))]
    assert roots == ["editor", "planner", "researcher", "writer"]
    assert (
        "│   ├── agent researcher (child runs)  3 runs · 33% errors · p95 6.00s · $0.4375"
    ) in lines
    assert "│   ├── agent writer (session)  2 runs · 0% errors · p95 4.00s · $0.3750" in lines
    assert "│   ├── tool lookup  20 calls · 80% errors · p95 4.75s · $0.0000" in lines
    assert "    └── model gpt-4o  1 call · 0% errors · p95 2.50s · $0.1250" in lines


def test_graph_agent_keeps_the_edges_touching_it(fleet: Path) -> None:
    result = corral(fleet, "graph", "--agent", "researcher", "--format", "json")
    assert result.exit_code == 0, result.output
    edges = [(e["source"], e["target"], e["calls"]) for e in loaded(result.stdout)["edges"]]
    assert edges == [
        ("agent:planner", "agent:researcher", 3),
        ("agent:researcher", "model:gpt-4o-mini", 1),
        ("agent:researcher", "tool:fetch", 2),
    ]
    tree = corral(fleet, "graph", "--agent", "researcher").output.splitlines()
    assert tree[1:] == [
        "├── planner",
        "│   └── agent researcher (child runs)  3 runs · 33% errors · p95 6.00s · $0.4375",
        "└── researcher",
        "    ├── model gpt-4o-mini  1 call · 0% errors · p95 500ms · $0.2500",
        "    └── tool fetch  2 calls · 50% errors · p95 4.00s · $0.0000",
    ]
    nobody = corral(fleet, "graph", "--agent", "nobody")
    assert (
        nobody.exit_code == 0 and nobody.output == "No edges touch agent nobody in the last 24h.\n"
    )


def test_graph_mermaid_and_dot(fleet: Path) -> None:
    mermaid = corral(fleet, "graph", "--format", "mermaid")
    assert mermaid.exit_code == 0, mermaid.output
    assert mermaid.stdout.startswith('flowchart LR\n    n0["editor"]:::agent\n')
    assert '    n1 -->|"20 calls, 80% errors, p95 4.75s, $0.0000"| n8\n' in mermaid.stdout
    dot = corral(fleet, "graph", "--format", "dot")
    assert dot.exit_code == 0, dot.output
    assert dot.stdout.startswith("digraph corral {\n") and dot.stdout.endswith("}\n")
    assert dot.stdout.count(" -> ") == len(EDGES)


def test_graph_of_an_empty_window(fleet: Path) -> None:
    # The fleet's runs and steps are all from more than half an hour ago.
    result = corral(fleet, "graph", "--since", "30m")
    assert result.exit_code == 0 and result.output == "Nothing recorded in the last 30m.\n"
    shown = loaded(corral(fleet, "graph", "--since", "30m", "--format", "json").stdout)
    assert shown["nodes"] == [] and shown["edges"] == []


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graph_png_renders_with_graphviz(fleet: Path, tmp_path: Path) -> None:
    image = tmp_path / "fleet.png"
    result = corral(fleet, "graph", "--png", str(image))
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {image} (11 nodes, 11 edges)\n"
    assert image.read_bytes().startswith(PNG_MAGIC)
    assert image.stat().st_size > 1000


def test_graph_png_without_graphviz_says_how_to_get_it(
    fleet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_observe.shutil, "which", lambda name: None)
    image = tmp_path / "fleet.png"
    result = corral(fleet, "graph", "--png", str(image))
    assert result.exit_code == 1
    said = flat(result.output)
    assert "install graphviz" in said and "apt-get install graphviz" in said
    assert "--format dot" in said
    assert not image.exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--since", "yesterday"], "Invalid value for '--since': expected a duration like"),
        (["--since", "0s"], "Invalid value for '--since': must be longer than 0, got '0s'"),
        (["--format", "svg"], "Invalid value for '--format'"),
    ],
)
def test_graph_bad_input_names_the_option(fleet: Path, args: list[str], says: str) -> None:
    result = corral(fleet, "graph", *args)
    assert result.exit_code == 2
    assert says in flat(result.output)
    if args[0] == "--format":
        assert "'tree', 'mermaid', 'dot', 'json'" in flat(result.output)


# corral report


def test_report_json_figures(fleet: Path) -> None:
    result = corral(fleet, "report", "--json")
    assert result.exit_code == 0, result.output
    shown = loaded(result.stdout)
    assert shown["until"] - shown["since"] == 86400.0
    figures = {
        t["agent_type"]: (
            t["in_policy"], t["runs"], t["ended"], t["succeeded"], t["success_rate"],
            t["cost_usd"], t["cost_per_success"], t["p50_s"], t["p95_s"],
            [(h["reason"], h["runs"]) for h in t["halt_reasons"]],
            t["slowest_hop"],
        )
        for t in shown["agent_types"]
    }  # fmt: skip
    assert figures == {
        "legacy": (
            False, 3, 3, 2, 2 / 3, 0.4375, 0.21875, 2.0, 4.0, [],
            {"name": "gpt-4o", "kind": "llm", "p95_s": 2.5},
        ),
        "operational": (
            True, 4, 3, 1, 1 / 3, 0.9375, 0.9375, 4.0, 8.0, [("budget.cost", 2)],
            {"name": "lookup", "kind": "tool", "p95_s": 4.75},
        ),
        # r1 reported "failed", which this policy's research type does not count as failure
        "research": (
            True, 3, 3, 1, 1 / 3, 0.4375, 0.4375, 3.0, 6.0, [("loop.repeat", 1)],
            {"name": "fetch", "kind": "tool", "p95_s": 4.0},
        ),
    }  # fmt: skip


def test_report_uses_the_policy_definition_of_success(tmp_path: Path) -> None:
    # Research failing on "failed" as well: none of r1 ("failed"), r2 ("no_sources") and r3
    # (halted) succeeded, so a success has no cost to show.
    both = {"  research:\n": "  research:\n    failure_outcomes: [failed, no_sources]\n"}
    policy = example_policy(tmp_path, both)
    on_store(policy, lambda store: seed_fleet(store, float(int(time.time()) - 3600)))
    result = corral(policy, "report", "--json")
    assert result.exit_code == 0, result.output
    research = next(
        t for t in loaded(result.stdout)["agent_types"] if t["agent_type"] == "research"
    )
    assert (research["succeeded"], research["success_rate"]) == (0, 0.0)
    assert research["cost_per_success"] is None
    table = corral(policy, "report")
    row = next(line for line in table.output.splitlines() if line.startswith(" research"))
    assert row.split()[1:4] == ["3", "0/3", "0%"] and row.split()[4] == "—"


def test_report_table_reads_at_80_columns(fleet: Path) -> None:
    result = corral(fleet, "report")
    assert result.exit_code == 0, result.output
    fits(result.output)
    lines = result.output.splitlines()
    assert lines[0].strip().startswith("Agent types, last 24h (since ")
    rows = {line.split()[0]: line for line in lines if line.startswith(" ") and line.split()}
    assert rows["operational"].split()[:9] == [
        "operational", "4", "1/3", "33%", "$0.9375", "4.00s", "8.00s", "budget.cost", "lookup",
    ]  # fmt: skip
    assert rows["legacy"].split()[:9] == [
        "legacy", "*", "3", "2/3", "67%", "$0.2188", "2.00s", "4.00s", "—",
    ]  # fmt: skip
    assert "research" in rows and "loop.repeat" in rows["research"]
    assert "* not in the policy any more: judged by the default failure outcomes" in result.output


def test_report_of_an_empty_window_and_a_bad_since(fleet: Path) -> None:
    empty = corral(fleet, "report", "--since", "30m")
    assert empty.exit_code == 0 and empty.output == "No runs in the last 30m.\n"
    bad = corral(fleet, "report", "--since", "-1h")
    assert bad.exit_code == 2
    assert "Invalid value for '--since'" in flat(bad.output)


def test_graph_tree_shows_an_agent_that_called_nothing(policy: Path) -> None:
    now = time.time()
    idle = RunRecord("idle", "watcher", "operational", now - 60, now - 60)
    on_store(policy, lambda store: store.create_run(idle))
    result = corral(policy, "graph")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1:] == ["└── watcher", "    └── no calls"]
