"""Shared counters out of reach: the gateway refuses the call (fail closed), upstream
never sees it."""

from __future__ import annotations

import socket

from .conftest import Serve

HELLO = [{"role": "user", "content": "hello"}]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_counters_refuse_the_call_before_it_goes_upstream(serve: Serve) -> None:
    served = await serve(
        edits={"counters: memory": f"counters: redis://127.0.0.1:{closed_port()}/0"}
    )
    async with served.client() as client:
        answer = await client.post(
            "/v1/chat/completions", json={"model": "default", "messages": HELLO, "max_tokens": 5}
        )
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("counters_unavailable", "counters_unavailable")
    assert "nothing was sent" in error["message"]
    assert answer.headers["retry-after"] == "1"
    assert sum(served.sim.requests.values()) == 0  # the upstream never saw it
