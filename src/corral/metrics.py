"""Corral's Prometheus metrics for SDK users: the agent KPIs, the GenAI client metrics,
what the guards did and what span export dropped.

    registry = corral.metrics.registry(sup)   # mount it in your own exporter, or
    corral.metrics.serve(9464, sup)           # serve /metrics on 127.0.0.1:9464

The gateway serves the same on its own `/metrics`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from corral.runtime.supervisor import Supervisor

__all__ = ["registry", "serve"]


def registry(*supervisors: Supervisor) -> CollectorRegistry:
    """A registry holding the collectors of `supervisors`."""
    found = CollectorRegistry(auto_describe=True)
    for sup in supervisors:
        for collector in sup.collectors:
            found.register(collector)
    return found


def serve(port: int, *supervisors: Supervisor, addr: str = "127.0.0.1") -> Any:
    """Serve `supervisors`' metrics as Prometheus text on http://addr:port/ in a daemon
    thread; returns (server, thread) as prometheus_client's start_http_server does."""
    if not supervisors:
        raise ValueError("corral.metrics.serve(port, sup): name the supervisor(s) to serve")
    return start_http_server(port, addr=addr, registry=registry(*supervisors))
