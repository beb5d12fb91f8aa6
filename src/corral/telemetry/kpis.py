"""The agent KPIs and the OpenTelemetry GenAI client metrics, as Prometheus metrics.

Labels are bounded by the policy: agents, agent types, models, tools and halt reasons,
never run ids. Counters are bumped in O(1) on the hot path; the ratios on-call reads
first (task success rate, retry and fallback rates, escalations per run, cost per
successful outcome) are worked out from them when scraped.

A run is successful by AgentType.succeeded (policy.py): completed, with no failure
outcome reported.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from corral.calls import Usage

# The GenAI semantic conventions' advised buckets.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48)
TRACE_SECONDS_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
COST_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 50)
SAFE_FAIL_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
COUNT_BUCKETS = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89)
RATIO_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
WAIT_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 14400, 86400)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
DECIDED_KEPT = 10_000  # approval ids remembered so a decision's wait is observed once


class Children:
    """Labelled children of metrics, by metric and label values: prometheus_client's
    labels() locks and builds a tuple on every call, which showed in per-request profiles."""

    def __init__(self) -> None:
        self._found: dict[tuple[object, ...], Any] = {}

    def __call__(self, metric: Counter | Histogram, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._found.get(key)
        if child is None:
            child = self._found[key] = metric.labels(*values)
        return child


@dataclass(slots=True)
class _Tally:
    """What the ratios of one agent type are worked out from."""

    runs: int = 0
    successes: int = 0
    cost_usd: float = 0.0
    model_calls: int = 0
    retries: int = 0
    fallbacks: int = 0
    escalations: int = 0


class Kpis(Collector):
    """Register it on a registry (`registry()` makes one); the gateway's /metrics has it."""

    def __init__(self) -> None:
        self._registry = CollectorRegistry(auto_describe=True)
        r = self._registry
        run = ("agent", "agent_type")
        self.runs = Counter(
            "corral_runs", "Runs ended, by outcome: completed or the halt reason.",
            (*run, "outcome"), registry=r,
        )  # fmt: skip
        self.successes = Counter(
            "corral_runs_successful",
            "Runs that completed without a failure outcome.", run, registry=r,
        )  # fmt: skip
        self.tool_calls = Histogram(
            "corral_run_tool_calls", "Tool calls per task (run).", ("agent_type",),
            buckets=COUNT_BUCKETS, registry=r,
        )  # fmt: skip
        self.model_calls = Counter("corral_model_calls", "Model calls made.", run, registry=r)
        self.retries = Counter(
            "corral_retries", "Upstream attempts retried after a failure.", run, registry=r
        )
        self.fallbacks = Counter(
            "corral_fallbacks", "Model calls passed to the next model of their route.", run,
            registry=r,
        )  # fmt: skip
        self.escalations = Counter(
            "corral_escalations", "Halts and approvals requested: a human was needed.",
            (*run, "kind"), registry=r,
        )  # fmt: skip
        self.safe_fail = Histogram(
            "corral_time_to_safe_fail_seconds",
            "From a rule firing (or a kill request) to the run halted.",
            ("agent_type", "reason"), buckets=SAFE_FAIL_BUCKETS, registry=r,
        )  # fmt: skip
        self.run_cost = Counter(
            "corral_run_cost_usd", "USD spent by runs that ended.", run, registry=r
        )
        self.trace_cost = Histogram(
            "corral_trace_cost_usd", "Token cost per trace (a run and its calls).",
            ("agent_type",), buckets=COST_BUCKETS, registry=r,
        )  # fmt: skip
        self.trace_seconds = Histogram(
            "corral_trace_seconds",
            "Trace latency: a run's duration, less the time it waited for humans.",
            ("agent_type",), buckets=TRACE_SECONDS_BUCKETS, registry=r,
        )  # fmt: skip
        self.context = Histogram(
            "corral_context_utilization", "A model call's prompt over its window's room.",
            ("agent_type",), buckets=RATIO_BUCKETS, registry=r,
        )  # fmt: skip
        self.loops = Counter(
            "corral_loop_detections", "Loop detector firings, by detector and action.",
            ("agent_type", "detector", "action"), registry=r,
        )  # fmt: skip
        self.approval_wait = Histogram(
            "corral_approval_wait_seconds", "From an approval requested to its decision.",
            ("agent_type", "decision"), buckets=WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.anomalies = Counter(
            "corral_run_anomalies",
            "Runs past 3 × their agent type's p99 duration or step count.",
            ("agent_type", "signal"), registry=r,
        )  # fmt: skip
        self.drift = Counter(
            "corral_tool_drift_suspected",
            "Windows in which a tool's schema-related error rate passed 5 %.", ("tool",),
            registry=r,
        )  # fmt: skip
        genai = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")
        self.token_usage = Histogram(
            "gen_ai_client_token_usage", "Tokens per model call (GenAI semantic conventions).",
            (*genai, "gen_ai_response_model", "gen_ai_token_type"), buckets=TOKEN_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "gen_ai_client_operation_duration", "Model call duration (GenAI semantic conventions).",
            (*genai, "gen_ai_response_model", "error_type"), unit="seconds",
            buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self._tallies: defaultdict[str, _Tally] = defaultdict(_Tally)
        self._breakers: dict[tuple[str, str], str] = {}
        self._decided: OrderedDict[str, None] = OrderedDict()  # approvals observed, newest last
        self._child = Children()

    # --- what the gates and runs tell ---------------------------------------------

    def run_ended(
        self,
        agent: str,
        agent_type: str,
        outcome: str,
        *,
        succeeded: bool,
        cost_usd: float,
        tool_calls: int,
        seconds: float,
        safe_fail: float | None,
    ) -> None:
        """`outcome`: "completed" or the halt reason; `safe_fail`: seconds from the rule
        firing to the halt, for a halted run."""
        tally = self._tallies[agent_type]
        tally.runs += 1
        tally.cost_usd += cost_usd
        self._child(self.runs, agent, agent_type, outcome).inc()
        self._child(self.run_cost, agent, agent_type).inc(cost_usd)
        if succeeded:
            tally.successes += 1
            self._child(self.successes, agent, agent_type).inc()
        if safe_fail is not None:
            tally.escalations += 1
            self._child(self.escalations, agent, agent_type, "halt").inc()
            self._child(self.safe_fail, agent_type, outcome).observe(safe_fail)
        self._child(self.tool_calls, agent_type).observe(tool_calls)
        self._child(self.trace_cost, agent_type).observe(cost_usd)
        self._child(self.trace_seconds, agent_type).observe(seconds)

    def model_call(
        self,
        agent: str,
        agent_type: str,
        provider: str,
        request_model: str,
        response_model: str,
        usage: Usage | None,
        seconds: float,
        error_type: str,
        utilization: float | None,
    ) -> None:
        self._tallies[agent_type].model_calls += 1
        self._child(self.model_calls, agent, agent_type).inc()
        self._child(
            self.duration, "chat", provider, request_model, response_model, error_type
        ).observe(seconds)
        if usage is not None:
            prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
            labels = ("chat", provider, request_model, response_model)
            self._child(self.token_usage, *labels, "input").observe(prompt)
            self._child(self.token_usage, *labels, "output").observe(usage.output_tokens)
        if utilization is not None:
            self._child(self.context, agent_type).observe(utilization)

    def retry(self, agent: str, agent_type: str) -> None:
        self._tallies[agent_type].retries += 1
        self._child(self.retries, agent, agent_type).inc()

    def fallback(self, agent: str, agent_type: str) -> None:
        self._tallies[agent_type].fallbacks += 1
        self._child(self.fallbacks, agent, agent_type).inc()

    def approval_requested(self, agent: str, agent_type: str) -> None:
        self._tallies[agent_type].escalations += 1
        self._child(self.escalations, agent, agent_type, "approval").inc()

    def approval_decided(
        self, approval_id: str, agent_type: str, decision: str, seconds: float
    ) -> None:
        """Once per approval, however many calls (a replay, a re-sent request) see it."""
        if approval_id in self._decided:
            return
        self._decided[approval_id] = None
        if len(self._decided) > DECIDED_KEPT:
            self._decided.popitem(last=False)
        self._child(self.approval_wait, agent_type, decision).observe(max(seconds, 0.0))

    def loop(self, agent_type: str, detector: str, action: str) -> None:
        self._child(self.loops, agent_type, detector, action).inc()

    def anomaly(self, agent_type: str, signal: str) -> None:
        self._child(self.anomalies, agent_type, signal).inc()

    def drift_suspected(self, tool: str) -> None:
        self._child(self.drift, tool).inc()

    def breaker(self, provider: str, model: str, state: str) -> None:
        self._breakers[(provider, model)] = state

    # --- scraping -----------------------------------------------------------------

    def collect(self) -> Iterator[Any]:
        yield from self._registry.collect()
        yield from self._ratios()
        breakers = GaugeMetricFamily(
            "corral_breaker_state",
            "Circuit breaker state as last seen by this process: 0 closed, 1 half-open, 2 open.",
            labels=("provider", "model"),
        )
        for (provider, model), state in sorted(self._breakers.items()):
            breakers.add_metric((provider, model), BREAKER_STATES[state])
        yield breakers

    def _ratios(self) -> Iterator[GaugeMetricFamily]:
        specs = (
            ("corral_task_success_ratio", "Ended runs that succeeded.", "successes", "runs"),
            ("corral_retry_ratio", "Retries per model call.", "retries", "model_calls"),
            ("corral_fallback_ratio", "Fallbacks per model call.", "fallbacks", "model_calls"),
            (
                "corral_escalations_per_run",
                "Halts and approvals requested per ended run.",
                "escalations",
                "runs",
            ),
            (
                "corral_cost_per_success_usd",
                "USD spent by ended runs per successful run.",
                "cost_usd",
                "successes",
            ),
        )
        for name, doc, numerator, denominator in specs:
            family = GaugeMetricFamily(name, doc, labels=("agent_type",))
            for agent_type, tally in sorted(self._tallies.items()):
                below = getattr(tally, denominator)
                if below:
                    family.add_metric((agent_type,), getattr(tally, numerator) / below)
            yield family

    def ratio(self, name: str, agent_type: str) -> float | None:
        """One of the scraped ratios, by its metric name, for an agent type."""
        for family in self._ratios():
            if family.name == name:
                for sample in family.samples:
                    if sample.labels["agent_type"] == agent_type:
                        return float(sample.value)
        return None
