"""Corral's Prometheus metrics for SDK users: the agent KPIs, the GenAI client metrics,
what the guards did and what span export dropped.

    registry = corral.metrics.registry(sup)   # mount it in your own exporter, or
    corral.metrics.serve(9464, sup)           # serve /metrics on 127.0.0.1:9464

`sup` is a Supervisor or a SyncSupervisor; one per registry (two would report the same
series twice).

The gateway serves the same on its own `/metrics`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from corral.runtime.supervisor import Supervisor
from corral.runtime.sync import SyncSupervisor

__all__ = ["registry", "serve"]


def registry(sup: Supervisor | SyncSupervisor) -> CollectorRegistry:
    """A registry holding `sup`'s collectors."""
    found = CollectorRegistry(auto_describe=True)
    inner = sup.supervisor if isinstance(sup, SyncSupervisor) else sup
    for collector in inner.collectors:
        found.register(collector)
    return found


def serve(port: int, sup: Supervisor | SyncSupervisor, *, addr: str = "127.0.0.1") -> Any:
    """Serve `sup`'s metrics as Prometheus text on http://addr:port/ in a daemon thread;
    returns (server, thread) as prometheus_client's start_http_server does."""
    return start_http_server(port, addr=addr, registry=registry(sup))
