"""The processes the reliability suite runs apart: the gateway it kills with SIGKILL or
measures, and an SDK agent it kills mid-tool.

usage: gateway_proc.py gateway POLICY SESSION_IDLE
       gateway_proc.py agent POLICY JOURNAL

`gateway`: `corral serve` as it builds itself (Supervisor.from_policy, Gateway, uvicorn
with the gateway's connection limits, on uvloop), on a free loopback port, which it
prints as `port N` once it accepts connections. Idle sessions end after SESSION_IDLE
seconds. Like `corral serve`, it settles the runs of dead processes as it starts (the
gateway's lifespan). It answers `/_probe/` too (see ProbedGateway).

`agent`: an SDK agent on POLICY: one run that asks a model, checkpoints, then calls the
tool get_customer, whose body journals `start get_customer <key>` and waits to be
killed; resumed after the crash (see `agent_work`), it calls the tool again and asks the
model once more, then completes. The journal is fsynced line by line so it survives the
kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from corral import Run, Supervisor
from corral.aio import loop_factory
from corral.gateway.app import Gateway
from corral.gateway.server import config
from corral.state.memory import MemoryCounters

AGENT = "support"
TOOL = "get_customer"  # the policy's; here a body that stalls until the kill
STALL_SECONDS = 60.0  # an orphan (its test died first) does not linger past this


class ProbedGateway(Gateway):
    """The gateway with a window for the tests into this process, on `/_probe/` (no key:
    loopback, in a test): `GET /_probe/state` answers what it holds after a full
    collection (RSS, counter keys, amounts held, sessions in memory). With
    CORRAL_TRACEMALLOC set, `POST /_probe/baseline` takes a tracemalloc snapshot, and the
    state then also names the allocation sites that grew most since (file:line, bytes,
    blocks), for a test that finds memory not given back."""

    _baseline: tracemalloc.Snapshot | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/_probe/"):
            return await super().__call__(scope, receive, send)
        if scope["path"] == "/_probe/baseline":
            gc.collect()
            self._baseline = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
            body: Any = {}
        else:
            body = self._state()
        payload = orjson.dumps(body)
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def _state(self) -> dict[str, Any]:
        gc.collect()
        counters = self.sup.counters
        assert isinstance(counters, MemoryCounters)
        status = Path("/proc/self/status").read_text()
        rss = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        state: dict[str, Any] = {
            "rss": int(rss.split()[1]) * 1024,
            "counter_keys": sorted(counters._counters),
            "held": {key: c.held for key, c in counters._counters.items() if c.held},
            "sessions": len(self.sessions),
        }
        if tracemalloc.is_tracing():
            state["traced"] = tracemalloc.get_traced_memory()[0]
        if self._baseline is not None:
            grown = tracemalloc.take_snapshot().compare_to(self._baseline, "lineno")
            state["grown_total"] = sum(stat.size_diff for stat in grown)
            state["grown"] = [
                [str(stat.traceback[0]), stat.size_diff, stat.count_diff] for stat in grown[:20]
            ]
        return state


async def gateway(policy: Path, session_idle: float) -> None:
    sup = Supervisor.from_policy(policy)
    app = ProbedGateway(sup, session_idle=session_idle)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(config(app, "127.0.0.1", 0, log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            break
        await asyncio.sleep(0.01)
    if os.environ.get("CORRAL_TRACEMALLOC"):  # what start-up built is not of interest
        tracemalloc.start()
    print(f"port {sock.getsockname()[1]}", flush=True)
    await serving


def journal(path: Path, line: str) -> None:
    with path.open("a") as out:
        out.write(line + "\n")
        out.flush()
        os.fsync(out.fileno())


def register_stall(sup: Supervisor, path: Path, *, stall: bool) -> None:
    def get_customer(customer_id: int, idempotency_key: str | None = None) -> dict[str, Any]:
        journal(path, f"start {TOOL} {idempotency_key}")
        if stall:
            time.sleep(STALL_SECONDS)
        return {"id": customer_id, "pid": os.getpid()}

    sup.tool(TOOL)(get_customer)


async def agent_work(run: Run, path: Path) -> None:
    """Ask, look the customer up, ask again. A resumed run starts after the first question
    (its checkpoint says so)."""
    if run.state is None:
        journal(path, f"run {run.id}")
        await run.chat("default", [{"role": "user", "content": "[#ask-1] Where is order 42?"}])
        await run.checkpoint({"asked": 1})
        journal(path, "asked")
    await run.tool(TOOL, {"customer_id": 42})
    journal(path, "looked up")
    await run.chat("default", [{"role": "user", "content": "[#ask-2] And order 43?"}])
    journal(path, "asked again")


async def agent(policy: Path, path: Path) -> None:
    async with Supervisor.from_policy(policy) as sup:
        register_stall(sup, path, stall=True)
        async with sup.run(agent=AGENT, task="crash-matrix") as run:
            await agent_work(run, path)


def main(argv: list[str]) -> None:
    mode, policy = argv[1], Path(argv[2])
    if mode == "gateway":
        work = gateway(policy, float(argv[3]))
    elif mode == "agent":
        work = agent(policy, Path(argv[3]))
    else:
        sys.exit(f"mode must be gateway or agent, got {mode!r}")
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory()) as r:
        r.run(work)


if __name__ == "__main__":
    main(sys.argv)
