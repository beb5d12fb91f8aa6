"""The gateway's Prometheus metrics, on a registry of its own (one per app, so tests and
embedders that build several apps never collide on metric names)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

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

    def render(self) -> bytes:
        return generate_latest(self.registry)
