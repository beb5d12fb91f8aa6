"""A gateway served by uvicorn on a loopback port, the simulated provider as its upstream."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiohttp import web

from corral import Supervisor
from corral.gateway.app import Gateway
from corral.gateway.keys import issue
from corral.gateway.server import config
from corral.providers.sim import SimProvider
from tests import support

ADMIN_KEY = "ck_admin_test-admin-key"


def tool_turn(call_id: str, name: str, arguments: str, result: str) -> list[dict[str, Any]]:
    """An assistant turn asking for one tool call, and the tool result the agent sends back."""
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    return [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": result},
    ]


@dataclass
class Served:
    url: str
    app: Gateway
    sim: SimProvider
    policy: Path
    agent_key: str  # a key of agent `support`

    @property
    def sup(self) -> Supervisor:
        return self.app.sup

    async def key(self, agent: str | None = "support", **kw: Any) -> str:
        key, _ = await issue(
            self.sup.store,
            agent=agent,
            admin=agent is None,
            expires_in=kw.get("expires_in"),
            now=time.time(),
        )
        return key

    def client(self, key: str | None = None, **headers: str) -> httpx.AsyncClient:
        sent = {"Authorization": f"Bearer {key or self.agent_key}", **headers}
        return httpx.AsyncClient(base_url=self.url, headers=sent, timeout=30)

    def admin(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
        )


@pytest.fixture
async def sim() -> AsyncIterator[SimProvider]:
    async with SimProvider() as provider:
        yield provider


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(
    tmp_path: Path, sim: SimProvider, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Serve]:
    """`await serve(edits={...}, **gateway_options)`: a gateway on the example policy."""
    monkeypatch.setenv("SIM_API_KEY", "sim")
    running: list[tuple[uvicorn.Server, asyncio.Task[None], Gateway]] = []

    async def start(edits: dict[str, str] | None = None, **options: Any) -> Served:
        policy = support.example_policy(
            tmp_path, {"http://127.0.0.1:4010/v1": sim.openai_base_url, **(edits or {})}
        )
        provider = options.pop("tracer_provider", None)
        sup = Supervisor.from_policy(policy, tracer_provider=provider)
        app = Gateway(sup, admin_key=ADMIN_KEY, **options)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(config(app, "127.0.0.1", 0, log_level="warning"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
            await asyncio.sleep(0.01)
        running.append((server, task, app))
        port = sock.getsockname()[1]
        served = Served(f"http://127.0.0.1:{port}", app, sim, policy, "")
        served.agent_key = await served.key("support")
        return served

    yield start
    for server, task, _ in running:
        server.should_exit = True
        await task


class Canned:
    """A loopback server that answers every POST with the pieces a test set, one write each."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pieces: list[bytes] = []
        self.content_type = "text/event-stream"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": self.content_type})
        await response.prepare(request)
        for piece in self.pieces:
            await response.write(piece)
        await response.write_eof()
        return response


@pytest.fixture
async def server() -> AsyncIterator[Canned]:
    app = web.Application()
    runner = web.AppRunner(app, access_log=None)
    canned = Canned("")
    app.router.add_post("/{path:.*}", canned.handle)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    canned.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield canned
    await runner.cleanup()
