"""httpx.AsyncClient against aiohttp.ClientSession on the adapters' path, in one run.

Both clients are pooled keep-alive clients POSTing a small chat-completion request to the
simulated provider, which runs alone in its own process (on uvloop) so client and server never
share a core. Each request does what an adapter does: encode the body, send it with a per-request
timeout, then decode the whole JSON answer, or read a streamed answer chunk by chunk to the end.

Per client and mode (whole, streamed):
  sequential   one request at a time: latency median and p99
  c=32         32 requests in flight: requests per second, and the client process's CPU time
               per request (the server may be the bottleneck at c=32; CPU time still shows
               what the client itself costs)

Clients and modes run interleaved in rounds after a warm-up, so drift lands on all alike.

Run: .venv/bin/python bench/http_client.py
"""

from __future__ import annotations

import asyncio
import math
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import httpx
import orjson

from corral.aio import loop_factory
from sim_throughput import start_server, stop_server

ROUNDS = 5
SEQUENTIAL = 400  # requests per round, one at a time
CONCURRENT = 2_000  # requests per round, CONCURRENCY in flight
CONCURRENCY = 32
WARM_UP = 200
TIMEOUT = 30.0
PATH = "/v1/chat/completions"
MESSAGES = [
    {"role": "system", "content": "You are a support agent."},
    {"role": "user", "content": "Where is my order #1042? It was due on Monday."},
]
WHOLE = orjson.dumps({"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 256})
STREAMED = orjson.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "max_tokens": 256,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
)
HEADERS = {"Authorization": "Bearer bench", "Content-Type": "application/json"}

SIM_SERVER = """
from corral.providers.sim import serve
serve(port=0, on_ready=lambda provider: print(provider.port, flush=True))
"""


class Client(Protocol):
    name: str

    async def whole(self) -> None: ...

    async def streamed(self) -> None: ...

    async def close(self) -> None: ...


class Httpx:
    name = "httpx"

    def __init__(self, url: str) -> None:
        self._url = url
        self._client = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=64))

    async def whole(self) -> None:
        response = await self._client.post(
            self._url, content=WHOLE, headers=HEADERS, timeout=TIMEOUT
        )
        response.raise_for_status()
        orjson.loads(response.content)

    async def streamed(self) -> None:
        request = self._client.build_request(
            "POST", self._url, content=STREAMED, headers=HEADERS, timeout=TIMEOUT
        )
        response = await self._client.send(request, stream=True)
        try:
            response.raise_for_status()
            async for _ in response.aiter_raw():
                pass
        finally:
            await response.aclose()

    async def close(self) -> None:
        await self._client.aclose()


class Aiohttp:
    name = "aiohttp"

    def __init__(self, url: str) -> None:
        self._url = url
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
        # The adapters' shape: no total limit, the timeout bounds each wait for bytes.
        self._timeout = aiohttp.ClientTimeout(sock_connect=TIMEOUT, sock_read=TIMEOUT)

    async def whole(self) -> None:
        async with self._session.post(
            self._url, data=WHOLE, headers=HEADERS, timeout=self._timeout
        ) as response:
            response.raise_for_status()
            orjson.loads(await response.read())

    async def streamed(self) -> None:
        async with self._session.post(
            self._url, data=STREAMED, headers=HEADERS, timeout=self._timeout
        ) as response:
            response.raise_for_status()
            async for _ in response.content.iter_any():
                pass

    async def close(self) -> None:
        await self._session.close()


@dataclass
class Figures:
    latencies_ns: list[int] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def median_ms(self) -> float:
        return statistics.median(self.latencies_ns) / 1e6

    def p99_ms(self) -> float:
        ordered = sorted(self.latencies_ns)
        return ordered[math.ceil(0.99 * len(ordered)) - 1] / 1e6

    def per_second(self) -> float:
        return self.requests / self.seconds

    def cpu_us(self) -> float:
        return self.cpu_seconds / self.requests * 1e6


async def sequential(send: Callable[[], Awaitable[None]], n: int, figures: Figures) -> None:
    for _ in range(n):
        start = time.perf_counter_ns()
        await send()
        figures.latencies_ns.append(time.perf_counter_ns() - start)


async def concurrent(send: Callable[[], Awaitable[None]], n: int, figures: Figures) -> None:
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await send()

    cpu, start = time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(CONCURRENCY):
            group.create_task(worker())
    figures.seconds += time.perf_counter() - start
    figures.cpu_seconds += time.process_time() - cpu
    figures.requests += n


async def measure(url: str) -> dict[tuple[str, str], tuple[Figures, Figures]]:
    clients: list[Client] = [Httpx(url), Aiohttp(url)]
    results: dict[tuple[str, str], tuple[Figures, Figures]] = {}
    try:
        for client in clients:
            for mode in (client.whole, client.streamed):
                await concurrent(mode, WARM_UP, Figures())
                results[client.name, mode.__name__] = (Figures(), Figures())
        for round_ in range(ROUNDS):
            # Alternate which client goes first, so neither always follows the other.
            for client in clients if round_ % 2 == 0 else clients[::-1]:
                for mode in (client.whole, client.streamed):
                    seq, conc = results[client.name, mode.__name__]
                    await sequential(mode, SEQUENTIAL, seq)
                    await concurrent(mode, CONCURRENT, conc)
    finally:
        for client in clients:
            await client.close()
    return results


def report(results: dict[tuple[str, str], tuple[Figures, Figures]], loop: str) -> None:
    print(
        f"POST {PATH} to the sim in another process; {ROUNDS} rounds of {SEQUENTIAL} sequential"
        f" and {CONCURRENT} at c={CONCURRENCY}; Python {sys.version.split()[0]},"
        f" httpx {httpx.__version__}, aiohttp {aiohttp.__version__}, {loop} event loop"
    )
    print(
        f"{'client':<9}{'mode':<10}{'seq p50 ms':>11}{'seq p99 ms':>11}"
        f"{'c=32 req/s':>12}{'c=32 CPU µs/req':>17}"
    )
    for (name, mode), (seq, conc) in results.items():
        print(
            f"{name:<9}{mode:<10}{seq.median_ms():>11.3f}{seq.p99_ms():>11.3f}"
            f"{conc.per_second():>12.0f}{conc.cpu_us():>17.0f}"
        )
    for mode in ("whole", "streamed"):
        h_seq, h_conc = results["httpx", mode]
        a_seq, a_conc = results["aiohttp", mode]
        print(
            f"httpx / aiohttp, {mode}: seq p50 {h_seq.median_ms() / a_seq.median_ms():.2f}x,"
            f" c=32 req/s {h_conc.per_second() / a_conc.per_second():.2f}x,"
            f" c=32 CPU/req {h_conc.cpu_us() / a_conc.cpu_us():.2f}x"
        )


def main() -> None:
    factory = loop_factory()
    process, port = start_server(SIM_SERVER)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            results = runner.run(measure(f"http://127.0.0.1:{port}{PATH}"))
    finally:
        stop_server(process)
    report(results, "asyncio" if factory is None else "uvloop")


if __name__ == "__main__":
    main()
