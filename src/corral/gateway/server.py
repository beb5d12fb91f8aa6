"""`corral serve`: the gateway under uvicorn, on uvloop with the httptools parser.

uvicorn over granian by bench/asgi_server.py: on a gateway-shaped app on this 2-core
machine, uvicorn answered at about a third of granian's latency at concurrency 1 and
at a similar rate at 32. Its httptools protocol is extended with the policy's connection
limits (corral.gateway.connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from pathlib import Path

import uvicorn

from corral.aio import loop_factory
from corral.gateway.app import Gateway
from corral.gateway.connection import LimitedHttpToolsProtocol
from corral.policy import load_policy
from corral.runtime.sealing import open_policy_store
from corral.runtime.supervisor import Supervisor

GC_YOUNG_THRESHOLD = 50_000  # CPython's default is 700 allocations


def config(
    app: Gateway, host: str, port: int, log_level: str = "info", *, logging_set: bool = False
) -> uvicorn.Config:
    """`logging_set`: `corral serve` set the loggers up (exchange.configure_logging), so
    uvicorn keeps its hands off them."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=LimitedHttpToolsProtocol,
        ws="none",  # the gateway has no WebSocket route
        lifespan="on",
        access_log=False,  # the gateway writes its own, with agent and run (corral.access)
        proxy_headers=False,  # the client's address is not used: no need to rewrite it
        log_level=log_level,  # info: startup and shutdown only, with access_log off
        log_config=None if logging_set else uvicorn.config.LOGGING_CONFIG,
        timeout_graceful_shutdown=5,
    )


def serve(
    policy_path: Path, host: str = "127.0.0.1", port: int = 4100, log_level: str = "info"
) -> None:
    """Serve until Ctrl-C or SIGTERM; the store and connections close on the way out."""

    async def main() -> None:
        # A shared PostgreSQL schema is migrated on purpose (`corral migrate`), not by
        # whichever gateway starts first.
        store = open_policy_store(load_policy(policy_path), migrate=False)
        sup = Supervisor.from_policy(policy_path, store=store)
        app = Gateway(sup)
        # What start-up built lives as long as the process: out of the collector's sight
        # it is never scanned again, and young collections run less often, since each
        # request makes a few hundred short-lived objects and almost no cycles.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        await uvicorn.Server(config(app, host, port, log_level, logging_set=True)).serve()

    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory()) as r:
        r.run(main())
