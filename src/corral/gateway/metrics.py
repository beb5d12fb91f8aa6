"""The gateway's Prometheus metrics, on a registry of its own (one per app, so tests and
embedders that build several apps never collide on metric names)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from corral.calls import Usage
from corral.telemetry.kpis import Children

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Corral's own time is sub-millisecond; the default buckets start at 5 ms and would hide it.
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "corral_gateway_requests",
            "Requests answered, by route and HTTP status.",
            ("route", "status"),
            registry=self.registry,
        )
        self.seconds = Histogram(
            "corral_gateway_request_seconds",
            "Time from request to the last byte of the answer.",
            ("route",),
            registry=self.registry,
        )
        self.overhead = Histogram(
            "corral_gateway_overhead_seconds",
            "Time spent in Corral rather than upstream, per model call.",
            buckets=_OVERHEAD_BUCKETS,
            registry=self.registry,
        )
        self.halts = Counter(
            "corral_halts",
            "Runs halted through the gateway, by halt reason.",
            ("reason",),
            registry=self.registry,
        )
        self.tokens = Counter(
            "corral_tokens",
            "Tokens used by model calls.",
            ("model", "direction"),
            registry=self.registry,
        )
        self.cost = Counter(
            "corral_cost_usd", "USD spent on model calls.", ("model",), registry=self.registry
        )
        self.sessions = Gauge(
            "corral_gateway_sessions", "Session runs held in memory.", registry=self.registry
        )
        self._child = Children()

    def request(self, route: str, status: int, seconds: float) -> None:
        self._child(self.requests, route, str(status)).inc()
        self._child(self.seconds, route).observe(seconds)

    def answer(self, model: str, usage: Usage, cost_usd: float, overhead: float) -> None:
        self.overhead.observe(max(overhead, 0.0))
        prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
        self._child(self.tokens, model, "input").inc(prompt)
        self._child(self.tokens, model, "output").inc(usage.output_tokens)
        self._child(self.cost, model).inc(cost_usd)

    def halt(self, reason: str) -> None:
        self._child(self.halts, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
