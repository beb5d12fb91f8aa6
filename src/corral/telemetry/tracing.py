"""Spans named and attributed by the OpenTelemetry GenAI semantic conventions.

One `invoke_agent {agent}` span per run in the SDK (INTERNAL, under the caller's current
span) and per request at the gateway (SERVER, continuing the client's `traceparent`);
under it a `chat {model}` (CLIENT) or `execute_tool {tool}` (INTERNAL) span per call, and
under a call a span per upstream attempt once it was retried or fell back. Corral's own
decisions are span events (each audit entry of a call) and `corral.*` attributes.

The call span in flight is kept in a context variable of Corral's own rather than
attached as OpenTelemetry's current span: attaching and detaching cost ~10 µs a call,
a third of the budget. Only a tool's own code runs under the attached span (so the
spans it makes nest under `execute_tool`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from typing import Any

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, TraceFlags, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from corral.policy import Policy

TRACER_NAME = "corral"
PROPAGATOR = TraceContextTextMapPropagator()

# The span in flight in this task and the run it belongs to: a call's, or a gateway
# request's between calls. A call of another run (a run a tool opened) does not nest
# under it: its own run's span is its parent.
CURRENT: ContextVar[tuple[str, Span] | None] = ContextVar("corral_span", default=None)

# Audit payload keys that name one of Corral's decisions, as the attribute they become.
_DECISION_KEYS = {
    "loop.": ("reason", "corral.loop.detector"),
    "guard.": ("guard", "corral.guard.rule"),
    "approval.": ("id", "corral.approval.id"),
}
# What an audit payload may put on a span as it is: names, ids and figures, never text a
# person or model wrote (that is content: telemetry.capture_content decides on it).
_EVENT_KEYS = frozenset({
    "id", "tool", "rule", "reason", "model", "route", "failure", "guard", "signal", "level",
    "on_timeout", "instead", "source", "dimension", "limit", "used", "tokens", "window",
    "utilization", "reserved", "calls", "schema_errors", "value", "p99", "seq", "status",
})  # fmt: skip


def current_span(run_id: str) -> Span | None:
    """The span in flight in this task if it is of run `run_id`."""
    found = CURRENT.get()
    return found[1] if found is not None and found[0] == run_id else None


class _HeaderGetter(Getter[Mapping[bytes, bytes]]):
    """Reads W3C trace headers from the gateway's raw (lower-cased bytes) headers."""

    def get(self, carrier: Mapping[bytes, bytes], key: str) -> list[str] | None:
        value = carrier.get(key.encode())
        return None if value is None else [value.decode("latin-1")]

    def keys(self, carrier: Mapping[bytes, bytes]) -> list[str]:
        return [key.decode("latin-1") for key in carrier]


_GETTER = _HeaderGetter()


class Tracing:
    """The tracer Corral's spans come from, and what they may carry.

    `provider` None: OpenTelemetry's global provider (a no-op until the application sets
    one), so an application that traces gets Corral's spans in its own pipeline."""

    def __init__(
        self,
        provider: trace.TracerProvider | None = None,
        *,
        capture_content: bool = False,
        redact: Callable[[Any], Any] | None = None,
    ) -> None:
        self.provider = provider
        self.tracer: Tracer = (
            trace.get_tracer(TRACER_NAME) if provider is None else provider.get_tracer(TRACER_NAME)
        )
        self.capture_content = capture_content
        self._redact = redact

    def content(self, value: Any) -> str | None:
        """`value` as a span may carry it: None unless content capture is on; redacted by
        the storage guard when that is on."""
        if not self.capture_content:
            return None
        if self._redact is not None:
            value = self._redact(value)
        return value if isinstance(value, str) else _json(value)

    def run_span(
        self,
        agent: str,
        run_id: str | None,
        session: str | None,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        parent: Context | None = None,
        first: tuple[str, str] | None = None,
    ) -> Span:
        """`invoke_agent {agent}`; `first`: the (trace id, span id) of the run's first
        trace, linked when this span is in another trace."""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
        }
        if run_id is not None:
            attributes["corral.run.id"] = run_id
        if session is not None:
            attributes["gen_ai.conversation.id"] = session
        links = [Link(context)] if (context := linked(first)) is not None else None
        return self.tracer.start_span(
            f"invoke_agent {agent}", parent, kind, attributes=attributes, links=links
        )

    @staticmethod
    def in_span(span: Span) -> Context:
        return trace.set_span_in_context(span)

    def request_context(self, headers: Mapping[bytes, bytes]) -> Context | None:
        """The client's trace, from its `traceparent`, if it sent one."""
        if b"traceparent" not in headers:
            return None
        return PROPAGATOR.extract(headers, getter=_GETTER)


def tie(span: Span, run: Any) -> Token[tuple[str, Span] | None]:
    """A gateway request's span joins its run: `corral.run.id`, and a link to the run's
    first trace when this request is not that trace. It is the span in flight until the
    token returned resets it."""
    record = run.context.record
    token = CURRENT.set((record.id, span))
    span.set_attribute("corral.run.id", record.id)
    here = ids(span)
    if record.trace_span is not None and here is not None and here[1] != record.trace_span:
        first = linked((record.trace_id or "", record.trace_span))
        if first is not None:
            span.add_link(first, {"corral.link": "run.first_trace"})
    return token


def linked(first: tuple[str, str] | None) -> SpanContext | None:
    if first is None:
        return None
    try:
        trace_id, span_id = int(first[0], 16), int(first[1], 16)
    except ValueError:
        return None
    return SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )


def ids(span: Span) -> tuple[str, str] | None:
    """A recording span's (trace id, span id) as the store keeps them, hex (a no-op span
    carries its parent's context, which is not a span of ours)."""
    context = span.get_span_context()
    if not context.is_valid or not span.is_recording():
        return None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


def traceparent(span: Span) -> bytes | None:
    """The W3C `traceparent` naming `span`, for the gateway's answer; None when nothing
    records spans (a no-op span carries the client's context, which is not ours)."""
    context = span.get_span_context()
    if not context.is_valid or not span.is_recording():
        return None
    flags = int(context.trace_flags)
    return (
        f"00-{trace.format_trace_id(context.trace_id)}-"
        f"{trace.format_span_id(context.span_id)}-{flags:02x}"
    ).encode()


def decision(kind: str, payload: Mapping[str, Any], run_id: str | None) -> None:
    """An audit entry of the run's call in flight, as an event on its span: its names,
    ids and figures (see _EVENT_KEYS)."""
    if run_id is None or (span := current_span(run_id)) is None or not span.is_recording():
        return
    attributes = {
        f"corral.{key}": value
        for key, value in payload.items()
        if key in _EVENT_KEYS and isinstance(value, str | int | float | bool)
    }
    for prefix, (key, name) in _DECISION_KEYS.items():
        if kind.startswith(prefix) and isinstance(payload.get(key), str):
            value = payload[key]
            if prefix == "guard.":  # the guard's rule, as halts name it: guards.output.pii
                value = f"guards.{value}"
            attributes[name] = value
            span.set_attribute(name, value)
    span.add_event(kind, attributes)


def attach(span: Span) -> Token[Context]:
    """`span` as OpenTelemetry's current span, for code of the agent's that runs under it,
    until `detach(token)` (a pair, not a context manager: a generator per tool call
    showed in the pipeline's cost)."""
    return otel_context.attach(trace.set_span_in_context(span))


def detach(token: Token[Context]) -> None:
    otel_context.detach(token)


def provider_name(policy: Policy, model: str | None) -> str | None:
    """`gen_ai.provider.name` of a policy model: the API it speaks (openai, anthropic)."""
    found = policy.models.get(model or "")
    if found is None:
        return None
    provider = policy.providers.get(found.provider)
    return None if provider is None else provider.kind


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()
