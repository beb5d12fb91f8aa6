"""The simulated provider: an OpenAI- and Anthropic-compatible model server for tests and benches.

It answers `POST /v1/chat/completions`, `POST /v1/messages` (streamed or not) and
`GET /v1/models` with scripted, deterministic replies, and injects faults on request: rate
limits, 5xx errors, connection resets, hangs, slow or cut streams, malformed or wrong-shaped
bodies. Nothing depends on wall-clock or global randomness except the `created` timestamps, so a
scripted run replays identically; probabilistic faults draw from a `random.Random(seed)`.

Which reply: the `X-Sim-Script` header (a registered script's name, or inline JSON), else the
script registered under the request's model, else a default echo of the last user message.
Within a script, the reply is chosen by how many assistant turns the request already holds.

Which fault, first match wins: the `X-Sim-Fault` header (a spec, see `Fault.parse`), the fault
registered for the model, the provider-wide fault. Its `rate` then decides if it fires.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import random
import signal
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import orjson
from aiohttp import web

from corral.aio import loop_factory
from corral.providers.sim_wire import (
    ANTHROPIC,
    OPENAI,
    WRONG_SHAPE_BODY,
    Answer,
    BadRequest,
    RenderedCall,
    Wire,
    assistant_turns,
    check_request,
    last_user_text,
    models_body,
    prompt_chars,
)

SCRIPT_HEADER = "X-Sim-Script"
FAULT_HEADER = "X-Sim-Fault"
DEFAULT_MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "claude-haiku-4-5")

# Long enough for a streaming handler to notice the stop and close; then aiohttp cancels it.
_SHUTDOWN_TIMEOUT = 1.0
# SO_LINGER on with a zero timeout: close() sends RST instead of FIN.
_LINGER_ZERO = struct.pack("ii", 1, 0)
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


class FaultKind(StrEnum):
    """What goes wrong; the values are the names used in fault specs."""

    RATE_LIMIT = "rate_limit"
    ERROR = "error"
    RESET = "reset"
    HANG = "hang"
    SLOW_FIRST_BYTE = "slow_first_byte"
    SLOW_STREAM = "slow_stream"
    CUT_STREAM = "cut_stream"
    MALFORMED_JSON = "malformed_json"
    WRONG_SHAPE = "wrong_shape"


# The options each kind takes in a spec; anything else is a typo worth refusing.
_OPTIONS: dict[FaultKind, tuple[str, ...]] = {
    FaultKind.RATE_LIMIT: ("retry_after", "rate"),
    FaultKind.ERROR: ("status", "rate"),
    FaultKind.RESET: ("rate",),
    FaultKind.HANG: ("delay", "rate"),
    FaultKind.SLOW_FIRST_BYTE: ("delay", "rate"),
    FaultKind.SLOW_STREAM: ("delay", "rate"),
    FaultKind.CUT_STREAM: ("after_chunks", "rate"),
    FaultKind.MALFORMED_JSON: ("rate",),
    FaultKind.WRONG_SHAPE: ("rate",),
}
_INT_OPTIONS = frozenset({"status", "after_chunks"})
_DEFAULT_DELAY = {
    FaultKind.HANG: 3600.0,
    FaultKind.SLOW_FIRST_BYTE: 1.0,
    FaultKind.SLOW_STREAM: 0.1,
}


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault to inject. `delay` None means the kind's default (hang 3600 s, slow_first_byte
    1 s, slow_stream 0.1 s between chunks); `rate` is the probability that it fires."""

    kind: FaultKind
    status: int = 500
    retry_after: float = 1.0
    delay: float | None = None
    after_chunks: int = 2
    rate: float = 1.0

    def __post_init__(self) -> None:
        if self.kind is FaultKind.ERROR and not 500 <= self.status <= 599:
            raise ValueError(f"status must be 500-599 for an error fault, got {self.status}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, got {self.rate}")
        for name, value in (("retry_after", self.retry_after), ("delay", self.delay)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value}")
        if self.after_chunks < 0:
            raise ValueError(f"after_chunks must be >= 0, got {self.after_chunks}")

    @property
    def wait(self) -> float:
        """Seconds this fault sleeps: `delay`, or the kind's default."""
        return self.delay if self.delay is not None else _DEFAULT_DELAY.get(self.kind, 0.0)

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """Parses `KIND[;key=value]...` or `STATUS[;key=value]...`.

        KIND is a `FaultKind` value; STATUS 429 means rate_limit and 500-599 an error with that
        status. Keys: rate (0..1) for all kinds, retry_after (s) for rate_limit, status for
        error, delay (s) for hang/slow_first_byte/slow_stream, after_chunks for cut_stream.
        E.g. ``"503"``, ``"rate_limit;retry_after=2"``, ``"error;status=500;rate=0.25"``.
        """
        head, *options = (part.strip() for part in spec.split(";"))
        fields: dict[str, Any] = {}
        if head.isdigit():
            status = int(head)
            if status == 429:
                kind = FaultKind.RATE_LIMIT
            elif 500 <= status <= 599:
                kind = FaultKind.ERROR
                fields["status"] = status
            else:
                raise ValueError(f"bad fault spec {spec!r}: status {status} is not 429 or 500-599")
        else:
            try:
                kind = FaultKind(head.lower())
            except ValueError:
                kinds = ", ".join(kind.value for kind in FaultKind)
                raise ValueError(
                    f"bad fault spec {spec!r}: unknown kind {head!r}; "
                    f"expected one of {kinds}, or a status (429, 500-599)"
                ) from None
        allowed = _OPTIONS[kind]
        for option in options:
            key, sep, raw = (part.strip() for part in option.partition("="))
            key = key.lower()
            if not sep or not key or not raw:
                raise ValueError(f"bad fault spec {spec!r}: option {option!r} is not key=value")
            if key not in allowed:
                raise ValueError(
                    f"bad fault spec {spec!r}: {kind} takes no {key!r}; "
                    f"its options are {', '.join(allowed)}"
                )
            if key in fields:
                raise ValueError(f"bad fault spec {spec!r}: {key!r} given twice")
            number: type[int] | type[float] = int if key in _INT_OPTIONS else float
            try:
                fields[key] = number(raw)
            except ValueError:
                expected = "an integer" if number is int else "a number"
                raise ValueError(
                    f"bad fault spec {spec!r}: {key}={raw!r} is not {expected}"
                ) from None
        try:
            return cls(kind, **fields)
        except ValueError as exc:
            raise ValueError(f"bad fault spec {spec!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class SimToolCall:
    """A tool call in a scripted reply; string arguments are sent verbatim, even if malformed."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)


_REPLY_KEYS = frozenset({"text", "tool_calls", "input_tokens", "output_tokens"})


@dataclass(frozen=True, slots=True)
class SimReply:
    """One scripted reply. Usage left None is estimated at ~4 characters per token."""

    text: str = ""
    tool_calls: tuple[SimToolCall, ...] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None

    @classmethod
    def from_json(cls, data: Any) -> SimReply:
        """Builds a reply from `{"text", "tool_calls": [{"name", "arguments"}], "input_tokens",
        "output_tokens"}`, all optional, as the script header and script files carry it."""
        if not isinstance(data, dict):
            raise ValueError(f"a reply must be a JSON object, got {type(data).__name__}")
        unknown = data.keys() - _REPLY_KEYS
        if unknown:
            raise ValueError(
                f"unknown reply keys {sorted(unknown)}; allowed: {', '.join(sorted(_REPLY_KEYS))}"
            )
        text = data.get("text", "")
        if not isinstance(text, str):
            raise ValueError("reply 'text' must be a string")
        calls = data.get("tool_calls", [])
        if not isinstance(calls, list):
            raise ValueError("reply 'tool_calls' must be an array")
        return cls(
            text,
            tuple(_tool_call_from_json(call, i) for i, call in enumerate(calls)),
            _tokens_from_json(data, "input_tokens"),
            _tokens_from_json(data, "output_tokens"),
        )


def _tool_call_from_json(data: Any, index: int) -> SimToolCall:
    where = f"tool_calls[{index}]"
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ValueError(f"{where} must be an object with a string 'name'")
    arguments = data.get("arguments", {})
    if not isinstance(arguments, dict | str):
        raise ValueError(f"{where}.arguments must be an object or a string")
    return SimToolCall(data["name"], arguments)


def _tokens_from_json(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"reply {key!r} must be an integer >= 0")
    return value


@dataclass(frozen=True, slots=True)
class Script:
    """Replies for successive turns; turns past the end repeat the last reply."""

    replies: tuple[SimReply, ...]

    def __post_init__(self) -> None:
        if not self.replies:
            raise ValueError("a script needs at least one reply")

    @classmethod
    def of(cls, *replies: SimReply | str) -> Script:
        """`Script.of("hi", SimReply(tool_calls=...))`: a string is a text-only reply."""
        return cls(tuple(SimReply(r) if isinstance(r, str) else r for r in replies))

    @classmethod
    def from_json(cls, data: Any) -> Script:
        """A reply object (see `SimReply.from_json`) or an array of them."""
        if isinstance(data, list):
            return cls(tuple(SimReply.from_json(reply) for reply in data))
        return cls((SimReply.from_json(data),))

    def reply(self, turn: int) -> SimReply:
        return self.replies[min(turn, len(self.replies) - 1)]


# Header values repeat across a test or a bench run; parse each distinct one once.
@functools.lru_cache(maxsize=256)
def _header_fault(spec: str) -> Fault:
    return Fault.parse(spec)


@functools.lru_cache(maxsize=256)
def _header_script(text: str) -> Script:
    return Script.from_json(orjson.loads(text))


def _estimate(chars: int) -> int:
    return max(1, -(-chars // 4))


def _render(call: SimToolCall) -> RenderedCall:
    if not isinstance(call.arguments, str):
        arguments = dict(call.arguments)
        return RenderedCall(call.name, orjson.dumps(arguments).decode(), arguments)
    try:
        parsed = orjson.loads(call.arguments)
    except orjson.JSONDecodeError:
        parsed = None
    return RenderedCall(
        call.name, call.arguments, parsed if isinstance(parsed, dict) else call.arguments
    )


def _json(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _close(request: web.BaseRequest, *, reset: bool = False) -> web.Response:
    """Drops the connection, with RST when `reset`, else FIN after the bytes already written.

    The returned response is never sent: aiohttp finds the transport closing when it tries
    and notes a client disconnect at debug level, which is the quiet path we want.
    """
    transport = request.transport
    if transport is not None:
        if reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
            transport.abort()
        else:
            transport.close()
    return web.Response()


_Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class SimProvider:
    """The simulated provider server. Use `async with SimProvider(...) as sim:`."""

    requests: Counter[str]
    """Requests received, keyed by ``"<path> <model>"`` (model ``-`` when there is none)."""

    _wires: ClassVar[dict[str, Wire]] = {"/v1/chat/completions": OPENAI, "/v1/messages": ANTHROPIC}

    def __init__(
        self,
        scripts: Mapping[str, Script] | None = None,
        faults: Mapping[str, Fault] | None = None,
        fault: Fault | None = None,
        seed: int = 0,
    ) -> None:
        self._scripts = dict(scripts or {})
        self._faults = dict(faults or {})
        self._fault = fault
        self._random = random.Random(seed)
        self._seq = itertools.count(1)
        self.requests = Counter()
        self.port = 0
        self._host = ""
        self._runner: web.ServerRunner | None = None
        self._stopping = asyncio.Event()
        self._routes: dict[tuple[str, str], _Handler] = {
            ("GET", "/v1/models"): self._models,
            **{
                ("POST", path): functools.partial(self._complete, wire=wire)
                for path, wire in self._wires.items()
            },
        }

    def set_script(self, model: str, script: Script | None) -> None:
        """Registers (or with None removes) the script for a model or script name."""
        if script is None:
            self._scripts.pop(model, None)
        else:
            self._scripts[model] = script

    def set_fault(self, model: str | None, fault: Fault | None) -> None:
        """Sets (or with None clears) the fault for a model; model None is provider-wide."""
        if model is None:
            self._fault = fault
        elif fault is None:
            self._faults.pop(model, None)
        else:
            self._faults[model] = fault

    @property
    def base_url(self) -> str:
        if self._runner is None:
            raise RuntimeError("the simulated provider is not running; call start() first")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SimProvider:
        if self._runner is not None:
            raise RuntimeError("the simulated provider is already running")
        self._stopping = asyncio.Event()
        # handler_cancellation: a client that gives up (e.g. on a hang) cancels its handler,
        # as a real server stops generating; access_log None keeps the per-request path lean.
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, backlog=1024).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._host = host
        self.port = runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        # Wakes every sleeping fault (hang, slow_*) so shutdown needs no cancellation.
        self._stopping.set()
        await runner.cleanup()

    async def __aenter__(self) -> SimProvider:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        route = self._routes.get((request.method, request.path))
        if route is None:
            return _json(404, OPENAI.error(404, f"no route for {request.method} {request.path}"))
        return await route(request)

    async def _models(self, request: web.BaseRequest) -> web.StreamResponse:
        self.requests[f"{request.path} -"] += 1
        names = dict.fromkeys([*DEFAULT_MODELS, *self._scripts, *self._faults])
        return _json(200, models_body(names))

    async def _complete(self, request: web.BaseRequest, wire: Wire) -> web.StreamResponse:
        # content.read() rather than request.read(): no 1 MiB cap, long prompts are legitimate.
        raw = await request.content.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self.requests[f"{request.path} -"] += 1
            return _json(400, wire.error(400, f"request body is not valid JSON: {exc}"))
        model = body.get("model") if isinstance(body, dict) else None
        self.requests[f"{request.path} {model if isinstance(model, str) else '-'}"] += 1
        try:
            model, messages = check_request(body)
            fault = self._fault_for(request.headers.get(FAULT_HEADER), model)
            script = self._script_for(request.headers.get(SCRIPT_HEADER), model)
        except BadRequest as exc:
            return _json(400, wire.error(400, exc.message, exc.param))
        stream = body.get("stream") is True
        if fault is not None:
            early = await self._before_reply(request, wire, fault, stream)
            if early is not None:
                return early
        answer = self._answer(body, model, messages, script)
        if stream:
            return await self._stream(request, wire, answer, body, fault)
        return await self._whole(request, wire, answer, fault)

    def _answer(
        self, body: Mapping[str, Any], model: str, messages: list[Any], script: Script | None
    ) -> Answer:
        if script is None:
            reply = SimReply(f"Simulated reply from {model} to: {last_user_text(messages)[:60]}")
        else:
            reply = script.reply(assistant_turns(messages))
        calls = tuple(map(_render, reply.tool_calls))
        input_tokens = reply.input_tokens
        if input_tokens is None:
            input_tokens = _estimate(prompt_chars(body))
        output_tokens = reply.output_tokens
        if output_tokens is None:
            output_tokens = _estimate(len(reply.text) + sum(len(c.arguments) for c in calls))
        # As a real model, it stops at the request's output limit (budgets rely on it).
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            output_tokens = min(output_tokens, limit)
        return Answer(
            next(self._seq), int(time.time()), model, reply.text, calls, input_tokens, output_tokens
        )

    def _fault_for(self, spec: str | None, model: str) -> Fault | None:
        if spec is None:
            fault = self._faults.get(model, self._fault)
        else:
            try:
                fault = _header_fault(spec)
            except ValueError as exc:
                raise BadRequest(f"bad {FAULT_HEADER} header: {exc}") from None
        # The generator is only consulted for partial rates, so certain faults do not shift
        # the sequence a seeded run sees.
        if fault is None or fault.rate >= 1.0 or self._random.random() < fault.rate:
            return fault
        return None

    def _script_for(self, header: str | None, model: str) -> Script | None:
        if header is None:
            return self._scripts.get(model)
        if header.lstrip().startswith(("{", "[")):
            try:
                return _header_script(header)
            except ValueError as exc:
                raise BadRequest(f"bad {SCRIPT_HEADER} header: {exc}") from None
        script = self._scripts.get(header)
        if script is None:
            known = ", ".join(sorted(self._scripts)) or "none"
            raise BadRequest(
                f"{SCRIPT_HEADER} names no registered script: {header!r} (registered: {known})"
            )
        return script

    async def _before_reply(
        self, request: web.BaseRequest, wire: Wire, fault: Fault, stream: bool
    ) -> web.StreamResponse | None:
        """Acts on a fault before the reply: answers instead of it, or delays it (None)."""
        kind = fault.kind
        if kind is FaultKind.RATE_LIMIT:
            headers = {"Retry-After": f"{fault.retry_after:g}"}
            return _json(429, wire.error(429, "Rate limit reached (simulated)."), headers)
        if kind is FaultKind.ERROR:
            return _json(fault.status, wire.error(fault.status, "Simulated upstream error."))
        if kind is FaultKind.RESET:
            return _close(request, reset=True)
        if kind is FaultKind.HANG:
            await self._pause(fault.wait)
            return _close(request)
        # A non-streamed reply has no gaps between chunks: slow_stream slows its first byte.
        slow = kind is FaultKind.SLOW_FIRST_BYTE or (kind is FaultKind.SLOW_STREAM and not stream)
        if slow and not await self._pause(fault.wait):
            return _close(request)
        return None

    async def _whole(
        self, request: web.BaseRequest, wire: Wire, answer: Answer, fault: Fault | None
    ) -> web.StreamResponse:
        if fault is None:
            return _json(200, wire.body(answer))
        kind = fault.kind
        if kind is FaultKind.WRONG_SHAPE:
            return _json(200, WRONG_SHAPE_BODY)
        body = wire.body(answer)
        if kind is FaultKind.MALFORMED_JSON:
            return _json(200, body[: len(body) // 2])
        if kind is FaultKind.CUT_STREAM:
            # Promise the whole body, send half: the client sees a short read.
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = len(body)
            with contextlib.suppress(ConnectionError):
                await response.prepare(request)
                await response.write(body[: len(body) // 2])
                _close(request)
            return response
        return _json(200, body)

    async def _stream(
        self,
        request: web.BaseRequest,
        wire: Wire,
        answer: Answer,
        body: Mapping[str, Any],
        fault: Fault | None,
    ) -> web.StreamResponse:
        kind = fault.kind if fault is not None else None
        if kind is FaultKind.MALFORMED_JSON:
            frames: Sequence[bytes] = wire.malformed_frames
        elif kind is FaultKind.WRONG_SHAPE:
            frames = wire.wrong_shape_frames
        else:
            frames = wire.frames(answer, body)
        response = web.StreamResponse(headers=_SSE_HEADERS)
        # A client leaving mid-stream is normal; aiohttp then notes it at debug level only.
        with contextlib.suppress(ConnectionError):
            await response.prepare(request)
            if fault is None or kind not in (FaultKind.SLOW_STREAM, FaultKind.CUT_STREAM):
                await response.write(b"".join(frames))
                return response
            for index, frame in enumerate(frames):
                if kind is FaultKind.CUT_STREAM and index == fault.after_chunks:
                    _close(request)
                    break
                if kind is FaultKind.SLOW_STREAM and index and not await self._pause(fault.wait):
                    _close(request)
                    break
                await response.write(frame)
        return response

    async def _pause(self, seconds: float) -> bool:
        """Sleeps `seconds`; False if the provider started stopping meanwhile."""
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return True
        return False


def serve(
    host: str = "127.0.0.1",
    port: int = 4010,
    *,
    scripts: Mapping[str, Script] | None = None,
    faults: Mapping[str, Fault] | None = None,
    fault: Fault | None = None,
    seed: int = 0,
    on_ready: Callable[[SimProvider], object] | None = None,
) -> None:
    """Runs the provider until Ctrl-C or SIGTERM, on uvloop when it is installed.

    `on_ready` is called once the port is bound (useful with port 0, e.g. to print it).
    """
    provider = SimProvider(scripts, faults, fault, seed)

    async def main() -> None:
        stop = asyncio.Event()
        # Windows has no add_signal_handler; Ctrl-C still works through asyncio.Runner.
        if sys.platform != "win32":
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await provider.start(host, port)
        try:
            if on_ready is not None:
                on_ready(provider)
            await stop.wait()
        finally:
            await provider.stop()

    # asyncio.Runner turns Ctrl-C into cancelling main(), whose `finally` stops the server,
    # then re-raises KeyboardInterrupt: by then the server has stopped, so it is not an error here.
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory()) as r:
        r.run(main())
