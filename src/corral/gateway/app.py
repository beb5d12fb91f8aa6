"""The gateway's ASGI app: routing, bodies, keys, and the model-call endpoints.

Plain ASGI rather than a framework: the routes are a fixed dozen, the hot path is two
of them, and reading the body under a byte limit and streaming server-sent events are
each a few lines here. Everything a request does to a run goes through the same
Supervisor pipeline as the SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from time import perf_counter
from typing import Any
from urllib.parse import parse_qsl

import orjson
from opentelemetry.trace import SpanKind

from corral.calls import Denied, LLMCall
from corral.gates.budget import remaining_usd
from corral.gateway.admin import AdminAPI
from corral.gateway.anthropic_wire import AnthropicDoor
from corral.gateway.exchange import Exchange
from corral.gateway.failures import Failure, failure_headers, failure_of
from corral.gateway.keys import KeyRefused, authenticate
from corral.gateway.metrics import CONTENT_TYPE, Metrics
from corral.gateway.openai_wire import OpenAIDoor
from corral.gateway.openapi import OPENAPI
from corral.gateway.sessions import Sessions, report_tool_results
from corral.gateway.wire import MAX_JSON_DEPTH, ChatRequest, Door, too_deep
from corral.runtime.retention import purge_periodically
from corral.runtime.run import ChatStream, Run
from corral.runtime.supervisor import Supervisor
from corral.state import (
    AgentKeyRecord,
    StoreError,
)
from corral.telemetry.tracing import CURRENT, current_span, tie, traceparent

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

log = logging.getLogger("corral.gateway")

MAX_BODY_BYTES = 10 * 1024 * 1024
SESSION_IDLE_SECONDS = 30 * 60.0
# A revoked key keeps working in this process for at most this long; an expired one
# stops at once (its expiry is checked on every request).
KEY_CACHE_SECONDS = 1.0
ADMIN_KEY_ENV = "CORRAL_ADMIN_KEY"

_JSON = (b"content-type", b"application/json")
_KEEPALIVE = b": waiting for approval\n\n"  # an SSE comment: clients skip it
_GET_ROUTES = frozenset({"/healthz", "/metrics", "/openapi.json", "/v1/models"})
_SSE = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx in front must not buffer the stream
]


class Gateway:
    """`Gateway(sup)` is an ASGI app; `corral serve` runs one under uvicorn."""

    def __init__(
        self,
        sup: Supervisor,
        *,
        admin_key: str | None = None,
        max_body: int = MAX_BODY_BYTES,
        session_idle: float = SESSION_IDLE_SECONDS,
        key_cache_seconds: float = KEY_CACHE_SECONDS,
    ) -> None:
        self.sup = sup
        self.sessions = Sessions(sup, idle=session_idle)
        self.metrics = Metrics()
        for collector in sup.collectors:  # KPIs, GenAI metrics, guards, span export
            self.metrics.registry.register(collector)
        self._admin_key = admin_key if admin_key is not None else os.environ.get(ADMIN_KEY_ENV)
        self._admin = AdminAPI(
            sup.store, sup.audit, sup.policy, sup.counters, on_decided=sup.approvals.wake
        )
        self._max_body = max_body
        self._key_ttl = key_cache_seconds
        self._keys: dict[str, tuple[AgentKeyRecord, float]] = {}
        self._doors: dict[str, Door] = {
            "/v1/chat/completions": OpenAIDoor(),
            "/v1/messages": AnthropicDoor(),
        }
        self._openai = self._doors["/v1/chat/completions"]
        self._openapi = orjson.dumps(OPENAPI)
        self._purger: asyncio.Task[None] | None = None  # retention, started at lifespan startup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def close(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
        await self.sessions.close()
        await self.sup.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Settle what a gateway that died left behind before serving (its runs of
                # one request halt with `interrupted`); retried at the first run if the
                # store fails now.
                try:
                    settled = await self.sup.recover()
                except StoreError as exc:
                    log.warning("recovery at startup failed, retried at the first run: %s", exc)
                else:
                    if settled:
                        log.warning("recovered %d run(s) of processes that died", len(settled))
                # Retention: once now and every hour, each under the policy then in force.
                self._purger = asyncio.create_task(
                    purge_periodically(
                        self.sup.store, self.sup.audit, lambda: self.sup.policy.current
                    ),
                    name="corral-retention",
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- routing -------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        headers = dict(scope["headers"])
        door = self._doors.get(path)
        exchange = Exchange(method, path)
        status = 500
        error = None
        try:
            if door is not None:
                if method != "POST":
                    raise _not_allowed(path, method, "POST")
                status = await self._chat(door, headers, receive, send, started, exchange)
            elif path.startswith("/admin/"):
                status = await self._admin_route(scope, method, path, headers, receive, send)
            elif path in _GET_ROUTES:
                if method != "GET":
                    raise _not_allowed(path, method, "GET")
                status = await self._get(path, headers, send)
            else:
                raise Failure(404, "not_found", f"no route {method} {path}")
        except Exception as exc:
            failure = await self._failed(exc, None)
            status = failure.status
            error = failure.code or failure.type
            trace_header = exchange.trace_header()
            await _reply(
                send,
                status,
                (door or self._openai).error(
                    failure.type,
                    failure.message,
                    code=failure.code,
                    param=failure.param,
                    run_id=failure.run_id,
                ),
                [*failure_headers(failure), *([trace_header] if trace_header else [])],
            )
        except BaseException:  # cancelled (the server shutting down): its span ends too
            exchange.ended(499, "cancelled")
            raise
        exchange.ended(status, error)
        # A fixed set of labels: paths with ids in them (admin) or unknown ones would not be.
        if door is None and path not in _GET_ROUTES:
            route = "/admin" if path.startswith("/admin/") else "other"
        else:
            route = path
        seconds = perf_counter() - started
        self.metrics.request(route, status, seconds)
        exchange.log(status, seconds)

    async def _get(self, path: str, headers: Mapping[bytes, bytes], send: Send) -> int:
        if path == "/healthz":
            await _reply(send, 200, b'{"status":"ok"}', [_JSON])
        elif path == "/metrics":
            self.metrics.sessions.set(len(self.sessions))
            body = self.metrics.render()
            await _reply(send, 200, body, [(b"content-type", CONTENT_TYPE.encode())])
        elif path == "/openapi.json":
            await _reply(send, 200, self._openapi, [_JSON])
        else:
            await self._agent(headers)
            await _reply(send, 200, self._models(b"anthropic-version" in headers), [_JSON])
        return 200

    def _models(self, anthropic: bool) -> bytes:
        """The policy's models and routes, in the listing shape of the API the client speaks."""
        policy = self.sup.policy.current
        names = [*policy.models, *policy.routes]
        if anthropic:
            data: list[dict[str, Any]] = [
                {"type": "model", "id": n, "display_name": n, "created_at": "1970-01-01T00:00:00Z"}
                for n in names
            ]
            first, last = (names[0], names[-1]) if names else (None, None)
            listing = {"data": data, "has_more": False, "first_id": first, "last_id": last}
            return orjson.dumps(listing)
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "corral"} for n in names]
        return orjson.dumps({"object": "list", "data": data})

    # --- keys ----------------------------------------------------------------

    async def _key_record(self, key: str) -> AgentKeyRecord:
        now = time.time()
        cached = self._keys.get(key)
        if cached is not None and now - cached[1] < self._key_ttl:
            record = cached[0]
            if record.expires_at is not None and now >= record.expires_at:
                raise KeyRefused("key expired")
            return record
        record = await authenticate(self.sup.store, key, now)
        if len(self._keys) > 10_000:  # bounded: stale entries go all at once, rarely
            self._keys.clear()
        self._keys[key] = (record, now)
        return record

    async def _agent(self, headers: Mapping[bytes, bytes]) -> AgentKeyRecord:
        key = _presented_key(headers)
        if key is None:
            raise Failure(
                401,
                "authentication_error",
                "no API key: send Authorization: Bearer KEY or x-api-key: KEY",
                code="invalid_api_key",
            )
        try:
            record = await self._key_record(key)
        except KeyRefused as refused:
            raise Failure(
                401, "authentication_error", refused.reason, code="invalid_api_key"
            ) from None
        if record.admin:
            raise Failure(
                401,
                "authentication_error",
                "an admin key makes no model calls: use an agent key",
                code="invalid_api_key",
            )
        return record

    async def _require_admin(self, headers: Mapping[bytes, bytes]) -> str:
        """Who is acting, as the audit log names deciders: `admin` for the admin key of
        the environment, else the stored admin key's id."""
        key = _presented_key(headers)
        if key is None:
            raise Failure(401, "authentication_error", "the admin API needs the admin key")
        if self._admin_key and hmac.compare_digest(key.encode(), self._admin_key.encode()):
            return "admin"
        try:
            record = await self._key_record(key)
        except KeyRefused as refused:
            raise Failure(401, "authentication_error", refused.reason) from None
        if not record.admin:
            raise Failure(403, "permission_error", "not an admin key")
        return f"key:{record.id}"

    # --- admin ---------------------------------------------------------------

    async def _admin_route(
        self,
        scope: Scope,
        method: str,
        path: str,
        headers: Mapping[bytes, bytes],
        receive: Receive,
        send: Send,
    ) -> int:
        by = await self._require_admin(headers)
        raw = await self._body(headers, receive)
        if raw:
            _require_json(headers)
        body = _json(raw) if raw else None
        status, payload = await self._admin.handle(method, path, _query(scope), body, by=by)
        reply_headers = [_JSON]
        if status == 405:
            allow = ", ".join(self._admin.allowed(path))
            reply_headers.append((b"allow", allow.encode()))
        await _reply(send, status, orjson.dumps(payload), reply_headers)
        return status

    # --- model calls ---------------------------------------------------------

    async def _chat(
        self,
        door: Door,
        headers: Mapping[bytes, bytes],
        receive: Receive,
        send: Send,
        started: float,
        exchange: Exchange,
    ) -> int:
        key = await self._agent(headers)
        exchange.agent = key.agent
        _require_json(headers)
        raw = await self._body(headers, receive)
        request = door.parse(_json(raw))
        policy = self.sup.policy.current
        agent = key.agent or ""
        if agent not in policy.agents:
            raise Failure(403, "permission_error", f"agent '{agent}' is not in the policy")
        if request.model not in policy.models and request.model not in policy.routes:
            known = ", ".join([*policy.models, *policy.routes])
            raise Failure(
                404,
                "not_found_error",
                f"model '{request.model}' is not in the policy (known: {known})",
                code="model_not_found",
                param="model",
            )
        session = _text(headers.get(b"x-corral-session"), "X-Corral-Session")
        task = _text(headers.get(b"x-corral-task"), "X-Corral-Task")
        parent = _text(headers.get(b"x-corral-parent-run"), "X-Corral-Parent-Run")
        outcome = _text(headers.get(b"x-corral-outcome"), "X-Corral-Outcome")
        # Each request is a trace of its own (the client's, when it sent a traceparent).
        tracing = self.sup.tracing
        span = exchange.span = tracing.run_span(
            agent, None, session, kind=SpanKind.SERVER, parent=tracing.request_context(headers)
        )
        try:
            run = await self.sessions.enter(agent, session, task, parent, span)
            if parent is not None and parent != run.context.record.parent_run_id:
                # A run opened earlier (or by a request without it): still of one team.
                await self.sup.check_parent(policy, agent, parent)
        except Denied as denied:
            raise Failure(403, "corral_halt", denied.message, code=denied.reason.value) from None
        exchange.run_id = run.id
        token = tie(span, run)  # the calls' spans nest under the request's (its task only)
        # The agent runs its own tools: the approval gate acts on the model's answers, and
        # finds an answer held for approval again by the request's fingerprint.
        ctx = run.context
        ctx.tools_in_client = True
        ctx.approval_hold = policy.gateway.approval_hold
        # Only an agent whose tools may need a human can have an answer held: others skip it.
        fingerprint = _fingerprint(agent, raw) if agent in policy.gated_agents else None
        answered = False
        try:
            status = await self._call(door, request, run, receive, send, started, fingerprint)
            answered = True
            return status
        except Exception as exc:
            # Whatever failed from here on failed in the run: answered with its id.
            raise self._note(await self._failed(exc, run.id)) from exc
        finally:
            CURRENT.reset(token)
            # The outcome a request reports is the run's only if it was answered; a run of
            # one request that was not is no success.
            if not answered:
                outcome = "failed" if session is None else None
            await self.sessions.leave(run, session, outcome)

    async def _call(
        self,
        door: Door,
        request: ChatRequest,
        run: Run,
        receive: Receive,
        send: Send,
        started: float,
        fingerprint: str | None,
    ) -> int:
        await report_tool_results(run, request.messages)
        # The adapters read `extra_headers` as HTTP headers: a body must not set them.
        request.params.pop("extra_headers", None)
        call = LLMCall(
            request.model,
            request.messages,
            request.params,
            max_tokens=request.max_tokens,
            request_key=fingerprint,
        )
        if request.stream:
            return await self._stream(door, request, run, call, receive, send, started)
        waited = _waited(run)
        result = await run.send(call)
        body = door.answer(result, request, _response_id())
        overhead = perf_counter() - started - call.upstream_seconds - (_waited(run) - waited)
        overhead -= call.retry_wait
        headers = await self._run_headers(run, overhead, call.retry_wait)
        await _reply(send, 200, body, [_JSON, *headers])
        self.metrics.answer(result.model, result.usage, result.cost_usd, overhead)
        return 200

    async def _stream(
        self,
        door: Door,
        request: ChatRequest,
        run: Run,
        call: LLMCall,
        receive: Receive,
        send: Send,
        started: float,
    ) -> int:
        """Nothing is sent until the first delta: a call refused before it (a halt, a rate
        limit, an upstream down) gets a plain error answer, not a broken stream."""
        answer = ChatStream(run, call)
        deltas = answer.__aiter__()
        waited = _waited(run)
        first = await anext(deltas, None)
        overhead = (call.upstream_started or perf_counter()) - started - call.upstream_seconds
        overhead -= _waited(run) - waited  # an answer sent again waited for a human first
        overhead -= call.retry_wait
        headers = await self._run_headers(run, overhead, call.retry_wait)
        # The first delta came from the model that answers: a stream never falls back after.
        encoder = door.stream(request, _response_id(), call.target)
        opening = encoder.start() + (encoder.delta(first) if first is not None else b"")
        # From here on a failure can only end the stream with an error event.
        await send({"type": "http.response.start", "status": 200, "headers": _SSE + headers})

        async def pump() -> None:
            await _chunk(send, opening)
            try:
                async for delta in deltas:
                    piece = _KEEPALIVE if delta.keepalive else encoder.delta(delta)
                    if piece:
                        await _chunk(send, piece)
                assert answer.result is not None
                closing = encoder.end(answer.result)
            except Exception as exc:
                failure = self._note(await self._failed(exc, run.id))
                await _chunk(
                    send,
                    encoder.error(
                        failure.type, failure.message, code=failure.code, run_id=failure.run_id
                    ),
                )
                return
            await _chunk(send, closing)
            self.metrics.answer(
                answer.result.model, answer.result.usage, answer.result.cost_usd, overhead
            )

        pumping = asyncio.ensure_future(pump())
        hangup = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait((pumping, hangup), return_when=asyncio.FIRST_COMPLETED)
        finally:
            hangup.cancel()
            if not pumping.done():  # the client went away: stop the call and its spending
                pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumping
            with contextlib.suppress(asyncio.CancelledError):
                await hangup
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return 200

    async def _failed(self, exc: Exception, run_id: str | None) -> Failure:
        """What a request that raised `exc` answers. A fault of the gateway's own is logged
        once and audited (`gateway.error`, with the run if there is one) under a request
        id its 500 carries, so no failed call goes unrecorded."""
        failure = failure_of(exc, run_id)
        if failure.status != 500 or failure.request_id is not None:
            return failure
        request_id = f"req_{_response_id()}"
        log.error("gateway request %s failed (run %s)", request_id, run_id, exc_info=exc)
        try:
            detail = {"request_id": request_id, "error": failure.message[:500]}
            await self.sup.audit.append("gateway.error", detail, run_id)
        except Exception:
            log.exception("gateway request %s: the failure could not be audited", request_id)
        message = f"the gateway failed on this request; its log has it under {request_id}"
        return Failure(500, "internal_error", message, run_id=run_id, request_id=request_id)

    def _note(self, failure: Failure) -> Failure:
        if failure.type == "corral_halt" and failure.code is not None:
            self.metrics.halt(failure.code)
        return failure

    async def _run_headers(self, run: Run, overhead: float, retry_wait: float) -> Headers:
        """`X-Corral-Overhead-Ms` is Corral's own time: not the upstream's, not a human's,
        not the pauses between retries (those are `X-Corral-Retry-Wait-Ms`)."""
        headers = [(b"x-corral-run", run.id.encode())]
        ctx = run.context
        left = await remaining_usd(self.sup.counters, ctx.caps, time.time())
        if left is not None:
            headers.append((b"x-corral-budget-remaining-usd", f"{left:.6f}".encode()))
        headers.append((b"x-corral-overhead-ms", f"{max(overhead, 0.0) * 1000:.3f}".encode()))
        if retry_wait:
            headers.append((b"x-corral-retry-wait-ms", f"{retry_wait * 1000:.3f}".encode()))
        span = current_span(run.id)
        if span is not None and (value := traceparent(span)) is not None:
            headers.append((b"traceparent", value))
        return headers

    # --- bodies --------------------------------------------------------------

    async def _body(self, headers: Mapping[bytes, bytes], receive: Receive) -> bytes:
        """The whole request body, refused (413) as soon as it passes the limit."""
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Failure(400, "invalid_request_error", "the client went away mid-body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _too_large(self) -> Failure:
        return Failure(
            413,
            "request_too_large",
            f"the request body is over the limit of {self._max_body} bytes",
        )


def _waited(run: Run) -> float:
    """How long the run has waited for humans so far: an answer held for an approval
    spends that time in Corral, yet it is no overhead of the gateway's (its header and
    histogram are about milliseconds). Another request of the session waiting meanwhile
    is taken off too; overheads are floored at zero."""
    return run.context.record.waiting_s


def _presented_key(headers: Mapping[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization")
    if auth is not None:
        scheme, _, key = auth.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and key.strip():
            return key.strip()
    key_header = headers.get(b"x-api-key")
    if key_header:
        return key_header.decode("latin-1").strip() or None
    return None


def _require_json(headers: Mapping[bytes, bytes]) -> None:
    """Refuse (415) a body that says it is not JSON: application/json or application/*+json,
    in UTF-8. A body that says nothing is read as JSON."""
    declared = headers.get(b"content-type")
    if declared is None:
        return
    media, *parameters = declared.decode("latin-1").lower().split(";")
    media = media.strip()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise Failure(
            415,
            "invalid_request_error",
            f"Content-Type {media or '(empty)'!r} is not JSON: send application/json",
            code="unsupported_media_type",
        )
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"')
        if name.strip() == "charset" and charset not in ("utf-8", "utf8"):
            raise Failure(
                415,
                "invalid_request_error",
                f"Content-Type charset {charset!r}: a JSON body is UTF-8",
                code="unsupported_media_type",
            )


def _json(raw: bytes) -> Any:
    if not raw:
        raise Failure(400, "invalid_request_error", "the request has no body: send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Failure(400, "invalid_request_error", f"the body is not valid JSON: {exc}") from None
    if type(body) is dict or type(body) is list:
        path = too_deep(body, MAX_JSON_DEPTH)
        if path is not None:
            where = _path_text(path[::-1])
            raise Failure(
                400,
                "invalid_request_error",
                f"the body nests deeper than {MAX_JSON_DEPTH} levels at {where}",
                code="json_too_deep",
                param=where.partition("[")[0].partition(".")[0] or None,
            )
    return body


def _path_text(path: list[str | int], shown: int = 6) -> str:
    """A path into the body as field names and [indexes], e.g. messages[0].content[1]...,
    its first `shown` steps only."""
    text = ""
    for key in path[:shown]:
        text += f"[{key}]" if isinstance(key, int) else f".{key}" if text else key
    return text + ("..." if len(path) > shown else "")


def _query(scope: Scope) -> dict[str, str]:
    """The query string's parameters; blank ones are kept (for the admin API to refuse: an
    empty filter is a mistake, not "no filter"), and one given twice is refused."""
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    query: dict[str, str] = {}
    for name, value in pairs:
        if name in query:
            message = f"query parameter {name!r} is given more than once"
            raise Failure(400, "invalid_request_error", message, param=name)
        query[name] = value
    return query


def _not_allowed(path: str, method: str, allowed: str) -> Failure:
    message = f"{path} takes {allowed}, not {method}"
    return Failure(405, "invalid_request_error", message, code="method_not_allowed", allow=allowed)


def _text(value: bytes | None, name: str) -> str | None:
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    if not text or len(text) > 200:
        raise Failure(400, "invalid_request_error", f"{name} must be 1 to 200 characters")
    return text


_RESPONSE_PREFIX = secrets.token_hex(6)
_response_numbers = itertools.count(1)


def _fingerprint(agent: str, body: bytes) -> str:
    """The same request sent again: same agent, same body (with or without a session)."""
    digest = hashlib.blake2b(digest_size=16, person=b"corral-request")
    digest.update(agent.encode())
    digest.update(b"\0")  # agent names hold no NUL: no two (agent, body) pairs collide
    digest.update(body)
    return digest.hexdigest()


def _response_id() -> str:
    """Unique per process start and request: a random prefix and a counter (uuid4 asks the
    kernel for randomness every time, which showed in the gateway's profile)."""
    return f"{_RESPONSE_PREFIX}{next(_response_numbers):012x}"


async def _reply(send: Send, status: int, body: bytes, headers: Headers) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _chunk(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
