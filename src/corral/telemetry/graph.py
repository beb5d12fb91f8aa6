"""The agent dependency graph: who called what over a window, from what the store recorded.

Nodes are agents, models and tools. An agent's edges go to the models its llm steps used
and the tools its tool steps called (a call is a step), and to other agents: to the agent
of each child run (RunRecord.parent_run_id), and from the agent that opened a session
(whose run in it started first) to each other agent with runs in that session, marked
"session". A run with a parent counts on its parent's edge alone, never also on a session
edge. On an agent edge a call is a child run, an error one that halted, its latency the
run's duration and its cost the run's.

The computation is pure: `build_graph` takes what the store's reads returned, and the
renderers (`to_json`, `to_mermaid`, `to_dot`) return text.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from corral.calls import RunStatus
from corral.state.records import RunRecord
from corral.state.store import STEP_PERCENTILE, RunOrigin, StepStats, nearest_rank

NodeType: TypeAlias = Literal["agent", "model", "tool"]
# How the source reached the target: its llm or tool steps, or a child run or a session.
EdgeKind: TypeAlias = Literal["llm", "tool", "parent", "session"]

_TARGET_TYPE: dict[str, NodeType] = {
    "llm": "model",
    "tool": "tool",
    "parent": "agent",
    "session": "agent",
}
_KIND_ORDER = ("parent", "session", "llm", "tool")


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    type: NodeType

    @property
    def id(self) -> str:
        """Unique across types: a tool may share a name with an agent."""
        return f"{self.type}:{self.name}"


@dataclass(frozen=True, slots=True)
class Edge:
    source: str  # an agent
    target: str
    kind: EdgeKind
    calls: int
    errors: int
    p95_s: float | None  # None when no call of it has ended
    cost_usd: float

    @property
    def target_type(self) -> NodeType:
        return _TARGET_TYPE[self.kind]

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0


@dataclass(frozen=True, slots=True)
class Graph:
    since: float
    until: float
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    def out_of(self, agent: str) -> list[Edge]:
        return [edge for edge in self.edges if edge.source == agent]


def run_seconds(run: RunRecord) -> float | None:
    """How long an ended run took, less the time it waited for a human; None if running."""
    if run.ended_at is None:
        return None
    return max(0.0, run.ended_at - run.created_at - run.waiting_s)


def build_graph(
    runs: Sequence[RunRecord],
    origins: Sequence[RunOrigin],
    steps: Sequence[StepStats],
    *,
    since: float,
    until: float,
    agent: str | None = None,
) -> Graph:
    """The graph of the runs created in the window (`runs`, with their `origins`) and the
    steps that started in it (`steps`, grouped by agent); with `agent`, only the edges
    that touch it."""
    edges = [Edge(s.group, s.hop, s.kind, s.calls, s.errors, s.p95_s, s.cost_usd) for s in steps]
    edges.extend(_agent_edges(runs, origins))
    if agent is not None:
        edges = [e for e in edges if _touches(e, agent)]
    edges.sort(key=lambda e: (e.source, _KIND_ORDER.index(e.kind), e.target))
    nodes: dict[str, Node] = {}
    agents: Iterable[str] = (r.agent for r in runs) if agent is None else (agent,)
    for name in agents:
        _add(nodes, Node(name, "agent"))
    for edge in edges:
        _add(nodes, Node(edge.source, "agent"))
        _add(nodes, Node(edge.target, edge.target_type))
    ordered = sorted(
        nodes.values(), key=lambda n: (("agent", "model", "tool").index(n.type), n.name)
    )
    return Graph(since, until, tuple(ordered), tuple(edges))


def _touches(edge: Edge, agent: str) -> bool:
    return edge.source == agent or (edge.target_type == "agent" and edge.target == agent)


def _add(nodes: dict[str, Node], node: Node) -> None:
    nodes.setdefault(node.id, node)


def _agent_edges(runs: Sequence[RunRecord], origins: Sequence[RunOrigin]) -> list[Edge]:
    by_id = {run.id: run for run in runs}
    children: dict[tuple[str, str, EdgeKind], list[RunRecord]] = defaultdict(list)
    for origin in origins:
        run = by_id.get(origin.run_id)
        if run is None:
            continue
        if origin.parent_agent is not None:
            children[(origin.parent_agent, run.agent, "parent")].append(run)
        elif origin.session_opener is not None and origin.session_opener != run.agent:
            children[(origin.session_opener, run.agent, "session")].append(run)
    edges = []
    for (source, target, kind), linked in children.items():
        durations = [d for d in map(run_seconds, linked) if d is not None]
        edges.append(
            Edge(
                source,
                target,
                kind,
                calls=len(linked),
                errors=sum(r.status == RunStatus.HALTED for r in linked),
                p95_s=nearest_rank(durations, STEP_PERCENTILE),
                cost_usd=sum(r.cost_usd for r in linked),
            )
        )
    return edges


# rendering


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.2f}s"
    return f"{seconds / 60:.1f}m"


def edge_figures(edge: Edge) -> list[str]:
    """Calls, error rate, p95 latency and cost, as short phrases."""
    noun = "run" if edge.target_type == "agent" else "call"
    plural = "" if edge.calls == 1 else "s"
    return [
        f"{edge.calls} {noun}{plural}",
        f"{edge.error_rate:.0%} errors",
        f"p{STEP_PERCENTILE} {seconds_text(edge.p95_s)}",
        f"${edge.cost_usd:.4f}",
    ]


def to_json(graph: Graph) -> dict[str, Any]:
    return {
        "since": graph.since,
        "until": graph.until,
        "nodes": [{"id": n.id, "name": n.name, "type": n.type} for n in graph.nodes],
        "edges": [
            {
                "source": f"agent:{e.source}",
                "target": f"{e.target_type}:{e.target}",
                "kind": e.kind,
                "calls": e.calls,
                "errors": e.errors,
                "error_rate": e.error_rate,
                "p95_s": e.p95_s,
                "cost_usd": e.cost_usd,
            }
            for e in graph.edges
        ],
    }


_MERMAID_SHAPES: dict[NodeType, tuple[str, str]] = {
    "agent": ("[", "]"),
    "model": ("([", "])"),
    "tool": ("[[", "]]"),
}


def _mermaid_text(text: str) -> str:
    # Inside a quoted label Mermaid reads entity codes; these would end it or start one.
    return text.replace("&", "#amp;").replace('"', "#quot;")


def to_mermaid(graph: Graph) -> str:
    """A Mermaid flowchart (left to right): agents boxes, models stadiums, tools
    subroutines, session edges dotted."""
    ids = {node.id: f"n{i}" for i, node in enumerate(graph.nodes)}
    lines = ["flowchart LR"]
    for node in graph.nodes:
        left, right = _MERMAID_SHAPES[node.type]
        lines.append(f'    {ids[node.id]}{left}"{_mermaid_text(node.name)}"{right}:::{node.type}')
    for e in graph.edges:
        arrow = "-.->" if e.kind == "session" else "-->"
        label = _mermaid_text(
            ("session: " if e.kind == "session" else "") + ", ".join(edge_figures(e))
        )
        source, target = ids[f"agent:{e.source}"], ids[f"{e.target_type}:{e.target}"]
        lines.append(f'    {source} {arrow}|"{label}"| {target}')
    lines.append("    classDef agent fill:#dbeafe,stroke:#1d4ed8")
    lines.append("    classDef model fill:#fef3c7,stroke:#b45309")
    lines.append("    classDef tool fill:#dcfce7,stroke:#15803d")
    return "\n".join(lines) + "\n"


_DOT_SHAPES: dict[NodeType, str] = {"agent": "box", "model": "ellipse", "tool": "component"}


def _dot_text(*lines: str) -> str:
    """A DOT quoted string of these lines (a label breaks them with \\n)."""
    return '"' + "\\n".join(re.sub(r'(["\\])', r"\\\1", line) for line in lines) + '"'


def to_dot(graph: Graph) -> str:
    """Graphviz DOT (render with `dot -Tpng`): session edges dashed, failing ones red."""
    lines = [
        "digraph corral {",
        "    rankdir=LR;",
        '    node [fontname="Helvetica", fontsize=11];',
        '    edge [fontname="Helvetica", fontsize=9];',
    ]
    for node in graph.nodes:
        shape = _DOT_SHAPES[node.type]
        lines.append(f"    {_dot_text(node.id)} [label={_dot_text(node.name)}, shape={shape}];")
    for e in graph.edges:
        note = ["session"] if e.kind == "session" else []
        attributes = [f"label={_dot_text(*note, *edge_figures(e))}"]
        if e.kind == "session":
            attributes.append("style=dashed")
        if e.errors:
            attributes.append("color=red")
        source, target = _dot_text(f"agent:{e.source}"), _dot_text(f"{e.target_type}:{e.target}")
        lines.append(f"    {source} -> {target} [{', '.join(attributes)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
