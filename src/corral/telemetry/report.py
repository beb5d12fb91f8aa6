"""Per agent type figures over a window: how many runs, how many succeeded, what a success
cost, how long a run took, why runs halted and which hop was slowest.

Success is the policy's one definition (AgentType.succeeded); a type the policy no longer
has is judged by the default failure outcomes. The success rate is over the runs that
ended: a run still running has not succeeded or failed yet. The cost per success is what
all the type's runs in the window spent (running and failed ones too: they are what a
success cost) over the successes. Latency is a run's duration less the time it waited for
a human (graph.run_seconds), over the ended runs.

Pure: `build_report` takes what the store's reads returned and the policy's agent types.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from corral.calls import RunStatus
from corral.policy import FAILURE_OUTCOMES, AgentType
from corral.state.records import RunRecord
from corral.state.store import StepStats, nearest_rank
from corral.telemetry.graph import run_seconds

_DEFAULT_TYPE = AgentType(failure_outcomes=FAILURE_OUTCOMES)


@dataclass(frozen=True, slots=True)
class Hop:
    """A model or tool, with the p95 latency of the type's calls to it."""

    name: str
    kind: Literal["llm", "tool"]
    p95_s: float


@dataclass(frozen=True, slots=True)
class TypeReport:
    agent_type: str
    in_policy: bool  # False: the policy no longer has it (judged by the default outcomes)
    runs: int
    ended: int
    succeeded: int
    cost_usd: float
    p50_s: float | None
    p95_s: float | None
    halt_reasons: tuple[tuple[str, int], ...]  # most frequent first
    slowest_hop: Hop | None

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.ended if self.ended else None

    @property
    def cost_per_success(self) -> float | None:
        return self.cost_usd / self.succeeded if self.succeeded else None


@dataclass(frozen=True, slots=True)
class Report:
    since: float
    until: float
    types: tuple[TypeReport, ...]


def build_report(
    runs: Sequence[RunRecord],
    steps: Sequence[StepStats],
    agent_types: Mapping[str, AgentType],
    *,
    since: float,
    until: float,
) -> Report:
    """The report of the runs created in the window and the steps that started in it
    (`steps` grouped by agent type), one entry per agent type that has either, by name."""
    by_type: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        by_type[run.agent_type].append(run)
    hops: dict[str, list[StepStats]] = defaultdict(list)
    for stat in steps:
        hops[stat.group].append(stat)
    reports = []
    for name in sorted(by_type.keys() | hops.keys()):
        kind = agent_types.get(name, _DEFAULT_TYPE)
        typed = by_type.get(name, [])
        ended = [run for run in typed if run.status != RunStatus.RUNNING]
        durations = [d for d in map(run_seconds, ended) if d is not None]
        halts = Counter(
            run.halt_reason or "(none)" for run in ended if run.status == RunStatus.HALTED
        )
        slowest = max(hops.get(name, []), key=lambda s: (s.p95_s, s.hop), default=None)
        reports.append(
            TypeReport(
                agent_type=name,
                in_policy=name in agent_types,
                runs=len(typed),
                ended=len(ended),
                succeeded=sum(kind.succeeded(run.status, run.outcome) for run in ended),
                cost_usd=sum(run.cost_usd for run in typed),
                p50_s=nearest_rank(durations, 50),
                p95_s=nearest_rank(durations, 95),
                halt_reasons=tuple(sorted(halts.items(), key=lambda item: (-item[1], item[0]))),
                slowest_hop=None
                if slowest is None
                else Hop(slowest.hop, slowest.kind, slowest.p95_s),
            )
        )
    return Report(since, until, tuple(reports))


def to_json(report: Report) -> dict[str, Any]:
    return {
        "since": report.since,
        "until": report.until,
        "agent_types": [
            {
                "agent_type": t.agent_type,
                "in_policy": t.in_policy,
                "runs": t.runs,
                "ended": t.ended,
                "succeeded": t.succeeded,
                "success_rate": t.success_rate,
                "cost_usd": t.cost_usd,
                "cost_per_success": t.cost_per_success,
                "p50_s": t.p50_s,
                "p95_s": t.p95_s,
                "halt_reasons": [{"reason": r, "runs": n} for r, n in t.halt_reasons],
                "slowest_hop": None
                if t.slowest_hop is None
                else {
                    "name": t.slowest_hop.name,
                    "kind": t.slowest_hop.kind,
                    "p95_s": t.slowest_hop.p95_s,
                },
            }
            for t in report.types
        ],
    }
