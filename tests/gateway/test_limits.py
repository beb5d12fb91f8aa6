"""Connection limits of `corral serve` (the policy's `gateway` keys), over raw sockets
against a real uvicorn server on loopback: oversized heads, slow heads and bodies, and
connections past the limit, all before any key is checked."""

from __future__ import annotations

import asyncio
import contextlib
import tracemalloc

import orjson
import pytest

from corral.providers.sim import Fault, FaultKind
from tests.gateway.conftest import Serve, Served

# Small enough that each test takes a fraction of a second.
LIMITS = {
    "max_header_bytes": "4096",
    "max_headers": "20",
    "header_timeout": "300ms",
    "body_timeout": "300ms",
    "max_connections": "1000",
}
GET_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
# Bounds a test's wait for an answer that should come: a broken limit fails, not hangs.
PATIENCE = 10.0

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def limited(serve: Serve, **limits: str) -> Served:
    keys = ", ".join(f"{key}: {value}" for key, value in {**LIMITS, **limits}.items())
    return await serve({"version: 1\n": f"version: 1\ngateway: {{{keys}}}\n"})


async def connect(gw: Served) -> Stream:
    host, port = gw.url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer: status, headers (lower-cased names) and body."""
    async with asyncio.timeout(PATIENCE):
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *lines = head.removesuffix("\r\n\r\n").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed the connection with nothing more to say."""
    async with asyncio.timeout(PATIENCE):
        try:
            return await reader.read() == b""
        except ConnectionResetError:
            return True


def error(body: bytes) -> tuple[str, str]:
    """A refusal's type and message; its shape is read by both API formats' clients."""
    shaped = orjson.loads(body)
    assert shaped["type"] == "error"
    return shaped["error"]["type"], shaped["error"]["message"]


def close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        writer.close()


# --- headers ----------------------------------------------------------------------


async def test_a_50_mb_header_is_refused_with_431_and_never_held(serve: Serve) -> None:
    gw = await limited(serve)
    reader, writer = await connect(gw)
    tracemalloc.start()
    try:
        answered = asyncio.create_task(answer(reader))  # read as it comes, as a browser does
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: ")
        piece = b"a" * 65536
        with contextlib.suppress(ConnectionError):
            for _ in range(50 * 1024 * 1024 // len(piece)):
                writer.write(piece)
                await writer.drain()
        status, headers, body = await answered
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 431
    assert headers["connection"] == "close"
    assert error(body) == (
        "request_too_large",
        "the request line and headers are over the limit of 4096 bytes",
    )
    # Client and server in this process together held a few reads' worth at a time.
    assert peak < 4 * 1024 * 1024
    assert await closed(reader)
    close(writer)
    reader, writer = await connect(gw)
    writer.write(GET_HEALTHZ)
    assert (await answer(reader))[0] == 200
    close(writer)


@pytest.mark.parametrize(
    ("request_head", "message"),
    [
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n",
            "the request line and headers are over the limit of 4096 bytes",
            id="one header in one write",
        ),
        pytest.param(
            b"GET /healthz?q=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n",
            "the request line and headers are over the limit of 4096 bytes",
            id="a long URL",
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\n"
            + b"".join(b"X-%d: v\r\n" % n for n in range(21))
            + b"\r\n",
            "the request line and headers have more than 20 fields",
            id="21 headers",
        ),
    ],
)
async def test_heads_over_the_limits_get_431(
    serve: Serve, request_head: bytes, message: str
) -> None:
    gw = await limited(serve)
    reader, writer = await connect(gw)
    writer.write(request_head)
    status, _, body = await answer(reader)
    assert (status, error(body)) == (431, ("request_too_large", message))
    assert await closed(reader)
    close(writer)


async def test_heads_within_the_limits_are_served(serve: Serve) -> None:
    gw = await limited(serve)
    reader, writer = await connect(gw)
    headers = b"".join(b"X-%d: %s\r\n" % (n, b"v" * 150) for n in range(19))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n" + headers + b"\r\n")
    status, _, body = await answer(reader)
    assert (status, orjson.loads(body)) == (200, {"status": "ok"})
    close(writer)


# --- timeouts ---------------------------------------------------------------------


async def test_slowloris_headers_get_408_and_the_connection_is_closed(serve: Serve) -> None:
    gw = await limited(serve)
    reader, writer = await connect(gw)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n")

    async def drip() -> None:
        # One header line at a time, each well inside the timeout, none ending the head.
        with contextlib.suppress(ConnectionError):
            for n in range(100):
                writer.write(b"X-%d: v\r\n" % n)
                await writer.drain()
                await asyncio.sleep(0.02)

    dripping = asyncio.create_task(drip())
    status, headers, body = await answer(reader)
    dripping.cancel()
    assert (status, headers["connection"]) == (408, "close")
    assert error(body) == ("request_timeout", "the request headers did not arrive within 0.3s")
    assert await closed(reader)
    close(writer)


async def test_a_connection_that_sends_nothing_gets_408(serve: Serve) -> None:
    gw = await limited(serve)
    reader, writer = await connect(gw)
    status, _, body = await answer(reader)
    assert (status, error(body)[0]) == (408, "request_timeout")
    assert await closed(reader)
    close(writer)


async def test_an_idle_kept_alive_connection_is_closed_without_an_answer(serve: Serve) -> None:
    gw = await limited(serve)
    reader, writer = await connect(gw)
    writer.write(GET_HEALTHZ)
    assert (await answer(reader))[0] == 200
    writer.write(GET_HEALTHZ)  # kept alive: a second request is served on it
    assert (await answer(reader))[0] == 200
    assert await closed(reader)  # then, idle past the header timeout, it is closed
    close(writer)


async def test_pipelined_requests_are_each_answered(serve: Serve) -> None:
    gw = await limited(serve)
    reader, writer = await connect(gw)
    writer.write(GET_HEALTHZ * 3)
    assert [(await answer(reader))[0] for _ in range(3)] == [200, 200, 200]
    close(writer)


async def test_an_oversized_head_behind_an_unanswered_request_cuts_the_connection(
    serve: Serve,
) -> None:
    gw = await limited(serve)
    gw.sim.set_fault(None, Fault(FaultKind.SLOW_FIRST_BYTE, delay=0.5))
    reader, writer = await connect(gw)
    chat = orjson.dumps({"model": "default", "messages": [{"role": "user", "content": "hi"}]})
    first = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
        b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s"
    ) % (gw.agent_key.encode(), len(chat), chat)
    # Pipelined behind it, before its answer: a 431 now would read as the first one's.
    writer.write(first + b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
    assert await closed(reader)
    close(writer)


def short_post(key: str | None) -> bytes:
    auth = b"Authorization: Bearer %s\r\n" % key.encode() if key else b""
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
        + auth
        + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        + b'{"model": "default", "messages": ['
    )


async def test_a_body_shorter_than_its_content_length_gets_408(serve: Serve) -> None:
    gw = await limited(serve)
    reader, writer = await connect(gw)
    writer.write(short_post(gw.agent_key))
    status, headers, body = await answer(reader)
    assert (status, headers["connection"]) == (408, "close")
    assert error(body) == ("request_timeout", "the request body did not arrive within 0.3s")
    assert await closed(reader)
    assert await gw.sup.store.list_runs() == []
    assert sum(gw.sim.requests.values()) == 0
    close(writer)


async def test_an_answer_before_the_body_is_followed_by_a_close_once_it_is_overdue(
    serve: Serve,
) -> None:
    gw = await limited(serve)
    reader, writer = await connect(gw)
    writer.write(short_post(None))  # no key: refused before the body is read
    status, _, _ = await answer(reader)
    assert status == 401
    assert await closed(reader)  # no second answer for the same request
    close(writer)


# --- connections ------------------------------------------------------------------


async def test_a_connection_past_the_limit_gets_503_and_a_later_one_is_served(
    serve: Serve,
) -> None:
    gw = await limited(serve, max_connections="2", header_timeout="10s")
    first, second = await connect(gw), await connect(gw)
    first[1].write(GET_HEALTHZ)
    assert (await answer(first[0]))[0] == 200  # kept alive: still counts

    reader, writer = await connect(gw)
    writer.write(GET_HEALTHZ)
    status, headers, body = await answer(reader)
    assert (status, headers["retry-after"], headers["connection"]) == (503, "1", "close")
    assert error(body) == (
        "overloaded_error",
        "the gateway has its limit of 2 connections open: try again later",
    )
    assert await closed(reader)
    close(writer)

    close(second[1])
    await second[1].wait_closed()
    # The server sees the close a moment later; until then a new connection is refused.
    async with asyncio.timeout(PATIENCE):
        while True:
            reader, writer = await connect(gw)
            writer.write(GET_HEALTHZ)
            status = (await answer(reader))[0]
            close(writer)
            if status == 200:
                break
            assert status == 503
            await asyncio.sleep(0.01)
    close(first[1])
