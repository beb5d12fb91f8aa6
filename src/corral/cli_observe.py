"""`corral graph` and `corral report`: what the store recorded, seen whole.

Both read a window ending now (`--since 24h`) with the store's observability reads, one
query each, and leave the figures to telemetry/graph.py and telemetry/report.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from corral.cli_common import (
    AsJson,
    PolicyPath,
    fail,
    out,
    policy_for_store,
    print_json,
    when,
    with_store,
)
from corral.policy import FAILURE_OUTCOMES, parse_duration
from corral.state import Store
from corral.telemetry import graph as graphs
from corral.telemetry import report as reports
from corral.telemetry.graph import Edge, Graph, build_graph, edge_figures, seconds_text
from corral.telemetry.report import Report, build_report

GraphFormat = Literal["tree", "mermaid", "dot", "json"]
INSTALL_GRAPHVIZ = (
    "--png renders with Graphviz's `dot`, which is not on PATH: install graphviz"
    " (`apt-get install graphviz`, `brew install graphviz`), or print the graph with"
    " --format dot and render it where Graphviz is"
)

Since = Annotated[
    str,
    typer.Option(
        "--since",
        metavar="DURATION",
        help="The window, ending now: e.g. 30m, 24h, 7d.",
    ),
]


def window(since: str) -> tuple[float, float, str]:
    """(start, end, the window as given) for a --since value; a usage error naming the
    option if it is not a positive duration."""
    try:
        seconds = parse_duration(since)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--since'") from None
    if seconds <= 0:
        raise typer.BadParameter(f"must be longer than 0, got {since!r}", param_hint="'--since'")
    until = time.time()
    return until - seconds, until, since.strip()


def graph(
    policy: PolicyPath = Path("corral.yaml"),
    since: Since = "24h",
    output: Annotated[
        GraphFormat | None,
        typer.Option(
            "--format",
            help="tree (the default), mermaid, dot (Graphviz) or json.",
            show_default=False,
        ),
    ] = None,
    png: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Render the graph to a PNG file with Graphviz's dot.",
            dir_okay=False,
        ),
    ] = None,
    agent: Annotated[
        str | None, typer.Option(metavar="NAME", help="Only the edges touching this agent.")
    ] = None,
) -> None:
    """The agent dependency graph: which models, tools and other agents each agent called
    over the window, with call counts, error rates, p95 latency and cost."""
    start, end, span = window(since)
    dot = None
    if png is not None:
        dot = shutil.which("dot")
        if dot is None:
            fail(INSTALL_GRAPHVIZ)

    async def read(store: Store) -> Graph:
        runs = await store.runs_between(start, end)
        origins = await store.run_origins(start, end)
        steps = await store.step_stats(start, end, by="agent")
        return build_graph(runs, origins, steps, since=start, until=end, agent=agent)

    found = with_store(policy, read)
    if dot is not None and png is not None:
        render_png(dot, found, png)
        if output is None:
            return
    if output == "json":
        print_json(graphs.to_json(found))
    elif output in ("mermaid", "dot"):
        # As is: Rich would read a name like :fire: as an emoji.
        text = graphs.to_mermaid(found) if output == "mermaid" else graphs.to_dot(found)
        sys.stdout.write(text)
    elif not found.nodes:
        out.print(f"Nothing recorded in the last {span}.", markup=False, highlight=False)
    elif agent is not None and not found.edges:
        out.print(
            f"No edges touch agent {agent} in the last {span}.", markup=False, highlight=False
        )
    else:
        out.print(graph_tree(found, span, filtered=agent is not None))


def render_png(dot: str, found: Graph, png: Path) -> None:
    try:
        done = subprocess.run(
            [dot, "-Tpng", "-o", str(png)],
            input=graphs.to_dot(found),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        fail(f"could not run {dot}: {exc}")
    if done.returncode != 0:
        fail(f"{dot} -Tpng failed (exit {done.returncode}): {done.stderr.strip()}")
    what = f"{len(found.nodes)} nodes, {len(found.edges)} edges"
    out.print(f"wrote {png} ({what})", markup=False, highlight=False, soft_wrap=True)


_EDGE_STYLE = {"parent": "agent", "session": "agent", "llm": "model", "tool": "tool"}
_EDGE_NOTE = {"parent": " (child runs)", "session": " (session)", "llm": "", "tool": ""}


def edge_label(edge: Edge) -> Text:
    label = Text()
    label.append(f"{_EDGE_STYLE[edge.kind]} ", style="dim")
    label.append(edge.target, style="red bold" if edge.errors else "bold")
    label.append(_EDGE_NOTE[edge.kind], style="dim")
    label.append("  " + " · ".join(edge_figures(edge)))
    return label


def graph_tree(found: Graph, span: str, *, filtered: bool = False) -> Tree:
    """One branch per agent, its edges under it: to agents (child runs, then sessions), to
    models, to tools."""
    tree = Tree(Text(f"Agent graph, last {span} (since {when(found.since)} UTC)"), hide_root=False)
    for node in found.nodes:
        if node.type != "agent":
            continue
        edges = found.out_of(node.name)
        if not edges and filtered:  # its edges were left out, but one to it is shown
            continue
        branch = tree.add(Text(node.name, style="bold cyan"))
        if not edges:
            branch.add(Text("no calls", style="dim"))
        for edge in edges:
            branch.add(edge_label(edge))
    return tree


def report(
    policy: PolicyPath = Path("corral.yaml"),
    since: Since = "24h",
    as_json: AsJson = False,
) -> None:
    """Per agent type over the window: runs, success rate, cost per successful outcome,
    p50/p95 run latency, top halt reasons and the slowest hop."""
    start, end, span = window(since)
    agent_types = policy_for_store(policy).agent_types

    async def read(store: Store) -> Report:
        runs = await store.runs_between(start, end)
        steps = await store.step_stats(start, end, by="agent_type")
        return build_report(runs, steps, agent_types, since=start, until=end)

    found = with_store(policy, read)
    if as_json:
        print_json(reports.to_json(found))
        return
    if not found.types:
        out.print(f"No runs in the last {span}.", markup=False, highlight=False)
        return
    out.print(report_table(found, span, out.width))
    if any(not t.in_policy for t in found.types):
        out.print(
            "* not in the policy any more: judged by the default failure outcomes"
            f" ({', '.join(FAILURE_OUTCOMES)})",
            highlight=False,
        )


TOP_HALT_REASONS = 3
# A column's share of a row beside its text: the divider and the padding between
# columns (collapsed to one), and the table's two edges.
_GAP, _EDGES = 2, 2


def report_table(found: Report, span: str, width: int) -> Group:
    """The figures of each agent type, in `width` columns. Names (agent types, halt
    reasons, hops) and figures are never cut: the halts and the slowest hop wrap between
    words, and if even so the table would not fit, they go on lines of their own below."""
    names = [t.agent_type + ("" if t.in_policy else " *") for t in found.types]
    rows = [[name, *_figures(t)] for name, t in zip(names, found.types, strict=True)]
    details = [(_halts(t), _slowest(t)) for t in found.types]
    fixed = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_FIGURES)]
    reasons = [r for t in found.types for r, _ in t.halt_reasons[:TOP_HALT_REASONS]]
    hops = [t.slowest_hop.name for t in found.types if t.slowest_hop is not None]
    # Headers wrap between words; a name is never cut, so its column is at least as wide.
    least = [max(map(len, [*reasons, "halts"])), max(map(len, [*hops, "slowest"]))]
    inline = sum(fixed) + sum(least) + _GAP * (len(fixed) + len(least) - 1) + _EDGES <= width
    table = Table(
        title=f"Agent types, last {span} (since {when(found.since)} UTC)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for i, column in enumerate(_FIGURES):
        table.add_column(column, justify="left" if i == 0 else "right", no_wrap=True)
    if inline:
        table.add_column("top halts", overflow="fold", min_width=least[0])
        table.add_column("slowest hop", overflow="fold", min_width=least[1])
    for row, (halts, slowest) in zip(rows, details, strict=True):
        cells = [*row, "\n".join(halts), slowest] if inline else row
        table.add_row(*(Text(cell) for cell in cells))
    if inline:
        return Group(table)
    below = [
        Text(f"{t.agent_type}: top halts {', '.join(halts)}; slowest hop {slowest}")
        for t, (halts, slowest) in zip(found.types, details, strict=True)
    ]
    return Group(table, *below)


_FIGURES = ("agent type", "runs", "success", "$/success", "p50", "p95")


def _figures(t: reports.TypeReport) -> list[str]:
    rate = "—" if t.success_rate is None else f"{t.succeeded}/{t.ended} {t.success_rate:.0%}"
    cost = "—" if t.cost_per_success is None else f"${t.cost_per_success:.4f}"
    return [str(t.runs), rate, cost, seconds_text(t.p50_s), seconds_text(t.p95_s)]


def _halts(t: reports.TypeReport) -> list[str]:
    shown = [f"{reason} ×{n}" for reason, n in t.halt_reasons[:TOP_HALT_REASONS]]
    if len(t.halt_reasons) > TOP_HALT_REASONS:
        shown.append(f"+{len(t.halt_reasons) - TOP_HALT_REASONS} more")
    return shown or ["—"]


def _slowest(t: reports.TypeReport) -> str:
    hop = t.slowest_hop
    return "—" if hop is None else f"{hop.name} ({hop.kind}) {seconds_text(hop.p95_s)}"
