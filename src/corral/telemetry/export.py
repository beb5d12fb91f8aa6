"""How spans leave the process: an OTLP exporter (HTTP/protobuf or gRPC) behind a batch
processor, aimed by the policy's `telemetry.otlp` or else by the standard
OTEL_EXPORTER_OTLP_* environment, and what was lost on the way counted as Prometheus
counters (`ExportStats`), never silent.

`tracer_provider` returns None when nothing names a collector; the caller then uses
OpenTelemetry's global provider (a no-op unless the application set one). A provider it
returns is the caller's to shut down: `provider.shutdown()` (also run at interpreter exit)
flushes what is queued and gives up after the policy's timeout; `provider.force_flush()`
is bounded the same way and returns False when spans did not make it.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, Generic, Literal, TypeVar, get_args
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.util.re import parse_env_headers
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from corral.policy_telemetry import Telemetry

log = logging.getLogger("corral.telemetry")

OtlpProtocol = Literal["http/protobuf", "grpc"]
PROTOCOLS: Final[tuple[str, ...]] = get_args(OtlpProtocol)
DropReason = Literal["queue_full", "export_failed", "shutdown"]
DROP_REASONS: Final[tuple[str, ...]] = get_args(DropReason)

# The OTel SDK's defaults (OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
# OTEL_EXPORTER_OTLP_TIMEOUT in seconds, as the Python exporters read it).
DEFAULT_MAX_QUEUE_SIZE: Final = 2048
DEFAULT_MAX_EXPORT_BATCH_SIZE: Final = 512
DEFAULT_TIMEOUT: Final = 10.0
# How long past the exporter's own timeout we wait for it to come back on its own.
GRACE: Final = 0.25

T = TypeVar("T")


class ExportStats(Collector):
    """Spans the collector accepted (`corral_spans_exported_total`) and spans lost
    (`corral_spans_dropped_total{reason}`): `queue_full` (ended while the batch queue was
    full), `export_failed` (their batch was refused, or the collector did not answer in
    time), `shutdown` (ended after the provider shut down, or still queued when its
    shutdown gave up). Bumped from the batch processor's thread and the callers', so
    under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exported = 0
        self._dropped: Counter[str] = Counter()

    def add_exported(self, spans: int) -> None:
        with self._lock:
            self._exported += spans

    def add_dropped(self, reason: DropReason, spans: int) -> None:
        with self._lock:
            self._dropped[reason] += spans

    def collect(self) -> Iterator[CounterMetricFamily]:
        with self._lock:
            exported, dropped = self._exported, dict(self._dropped)
        yield CounterMetricFamily(
            "corral_spans_exported", "Spans the OTLP collector accepted.", value=exported
        )
        family = CounterMetricFamily(
            "corral_spans_dropped",
            "Spans that never reached the OTLP collector, by why.",
            labels=("reason",),
        )
        for reason in DROP_REASONS:
            family.add_metric((reason,), dropped.get(reason, 0))
        yield family


def tracer_provider(
    settings: Telemetry,
    env: Mapping[str, str] | None = None,
    *,
    stats: ExportStats | None = None,
    max_queue_size: int | None = None,
) -> TracerProvider | None:
    """A provider that batches spans to the OTLP collector the policy names, else the one
    the environment names (`env`, default os.environ), else None: nothing is exported.

    The policy's `telemetry.otlp` wins over the environment. From the environment, as the
    OTel spec has it: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is the full URL, while
    OTEL_EXPORTER_OTLP_ENDPOINT is a base the HTTP exporter appends `v1/traces` to; the
    protocol, headers and timeout come from the *_TRACES_* variable, else the general one.
    A protocol other than http/protobuf or grpc, or a timeout or queue size that is not a
    number, is a ValueError naming the variable. The exporters still read the rest of
    their configuration (certificates, compression) from os.environ themselves.

    `stats` counts what was exported and what was lost; `max_queue_size` (default
    OTEL_BSP_MAX_QUEUE_SIZE, else 2048) bounds the spans waiting to be sent.
    """
    env = os.environ if env is None else env
    target = _target(settings, env)
    if target is None:
        return None
    queue = (
        _int_env(env, "OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE_SIZE)
        if max_queue_size is None
        else max_queue_size
    )
    batch = _int_env(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_MAX_EXPORT_BATCH_SIZE)
    return _provider(
        _exporter(target),
        service_name=settings.service_name,
        timeout=target.timeout,
        stats=ExportStats() if stats is None else stats,
        max_queue_size=queue,
        max_export_batch_size=min(batch, queue),
    )


# --- where to -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    endpoint: str  # HTTP: the full URL spans are posted to; gRPC: the collector's address
    protocol: OtlpProtocol
    headers: Mapping[str, str]
    timeout: float  # seconds


def _target(settings: Telemetry, env: Mapping[str, str]) -> _Target | None:
    if settings.otlp is not None:
        otlp = settings.otlp
        url = otlp.endpoint
        if otlp.protocol == "http/protobuf" and urlsplit(url).path in ("", "/"):
            url = urlunsplit(urlsplit(url)._replace(path="/v1/traces"))
        return _Target(url, otlp.protocol, dict(otlp.headers), otlp.timeout)

    signal_endpoint = _env(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    endpoint = signal_endpoint or _env(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint is None:
        return None
    protocol = _protocol(env)
    if signal_endpoint is None and protocol == "http/protobuf":
        endpoint = f"{endpoint.removesuffix('/')}/v1/traces"  # a base URL
    raw_headers = _env(env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS") or _env(
        env, "OTEL_EXPORTER_OTLP_HEADERS"
    )
    headers = dict(parse_env_headers(raw_headers, liberal=True)) if raw_headers else {}
    return _Target(endpoint, protocol, headers, _timeout(env))


def _env(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _protocol(env: Mapping[str, str]) -> OtlpProtocol:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = _env(env, name)
        if value is None:
            continue
        if value == "http/protobuf":
            return "http/protobuf"
        if value == "grpc":
            return "grpc"
        raise ValueError(f"{name}={value!r}: Corral exports spans over {' or '.join(PROTOCOLS)}")
    return "http/protobuf"


def _timeout(env: Mapping[str, str]) -> float:
    # Seconds, as the Python OTLP exporters read these variables (the spec says ms).
    for name in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        value = _env(env, name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            seconds = float("nan")
        if not 0 < seconds < float("inf"):
            raise ValueError(f"{name}={value!r}: expected a timeout in seconds above 0")
        return seconds
    return DEFAULT_TIMEOUT


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    value = _env(env, name)
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name}={value!r}: expected a whole number above 0")
    return int(value)


def _exporter(target: _Target) -> SpanExporter:
    # gRPC metadata keys must be lower case; HTTP header names are not case sensitive.
    headers = {key.lower(): value for key, value in target.headers.items()}
    if target.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(
            endpoint=target.endpoint,
            insecure=True if urlsplit(target.endpoint).scheme == "http" else None,
            headers=headers,
            timeout=target.timeout,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(endpoint=target.endpoint, headers=headers, timeout=target.timeout)


def _provider(
    exporter: SpanExporter,
    *,
    service_name: str,
    timeout: float,
    stats: ExportStats,
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
    max_export_batch_size: int = DEFAULT_MAX_EXPORT_BATCH_SIZE,
) -> TracerProvider:
    backlog = _Backlog(max_queue_size)
    counted = _CountingExporter(exporter, backlog, stats, timeout)
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(
        _CountingProcessor(
            counted,
            backlog,
            stats,
            timeout=timeout,
            max_queue_size=max_queue_size,
            max_export_batch_size=min(max_export_batch_size, max_queue_size),
        )
    )
    return provider


# --- what was lost --------------------------------------------------------------------
#
# When its queue is full the SDK's BatchSpanProcessor drops the oldest span: the queue is
# a deque(maxlen=max_queue_size) and appendleft pushes one out. Up to 1.33 it warns once
# per processor, 1.34 to 1.40 say nothing at all, and since 1.41 it logs each drop and
# counts it as an OTel metric, off unless OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED is set
# and reaching only an OTel MeterProvider, not /metrics. The queue is private and moved
# (`BatchSpanProcessor.queue` up to 1.33, `._batch_processor._queue` since 1.34). So
# rather than read it or subclass its internals, we keep the count the queue would have:
# a span is admitted (handed to the SDK) only while fewer than max_queue_size admitted
# spans are yet to reach the exporter, and leaves the count when its batch does. The
# SDK's queue holds no more than that count, so it never fills and never drops itself;
# what we turn away is the drop, counted exactly, with only the public on_end and export
# hooks. (The span turned away is the newest, not the oldest: the spec leaves it open.)


class _Backlog:
    """Spans admitted to the batch processor that its exporter has not yet received."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._held = 0
        self._closed = False
        if hasattr(os, "register_at_fork"):
            # A forked child starts with the SDK's queue emptied, so with nothing held.
            reset = weakref.WeakMethod(self._after_fork)

            def after_in_child() -> None:
                if (method := reset()) is not None:
                    method()

            os.register_at_fork(after_in_child=after_in_child)

    def admit(self) -> bool | None:
        """True if the span may go on the queue, False if the queue is full, None once
        the processor is shutting down."""
        with self._lock:
            if self._closed:
                return None
            if self._held >= self.capacity:
                return False
            self._held += 1
            return True

    def leave(self, spans: int) -> None:
        with self._lock:
            self._held = max(0, self._held - spans)

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def left_behind(self) -> int:
        """Spans admitted that never reached the exporter; none are held afterwards."""
        with self._lock:
            held, self._held = self._held, 0
            return held

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._held = 0


class _CountingProcessor(BatchSpanProcessor):
    def __init__(
        self,
        exporter: _CountingExporter,
        backlog: _Backlog,
        stats: ExportStats,
        *,
        timeout: float,
        max_queue_size: int,
        max_export_batch_size: int,
    ) -> None:
        super().__init__(
            exporter, max_queue_size=max_queue_size, max_export_batch_size=max_export_batch_size
        )
        self._counted = exporter
        self._backlog = backlog
        self._stats = stats
        self._timeout = timeout
        self._dropping = False

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return  # the SDK's processor ignores these too: not exported, not lost
        admitted = self._backlog.admit()
        if admitted is None:
            self._stats.add_dropped("shutdown", 1)
            return
        if not admitted:
            if not self._dropping:
                log.warning(
                    "span queue full (%d): dropping spans until the exporter catches up",
                    self._backlog.capacity,
                )
            self._dropping = True
            self._stats.add_dropped("queue_full", 1)
            return
        self._dropping = False
        super().on_end(span)

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        budget = (
            self._timeout if timeout_millis is None else min(self._timeout, timeout_millis / 1e3)
        )
        with self._counted.window(budget) as window:
            flushed = super().force_flush(timeout_millis)
        return flushed and not window.failed

    def shutdown(self) -> None:
        # The SDK's own shutdown waits up to 30 s for its worker (1.27: without limit) and
        # that worker exports what is queued; within the window every export gives up at
        # the policy's timeout, so the whole shutdown is bounded by it.
        self._backlog.close()
        sdk_shutdown: Callable[[], object] = super().shutdown  # unannotated in some releases
        with self._counted.window(self._timeout):
            sdk_shutdown()
        if lost := self._backlog.left_behind():
            self._stats.add_dropped("shutdown", lost)


# --- bounded exports ------------------------------------------------------------------
#
# Up to 1.34 the OTLP exporters retry with backoff for up to 63 s per batch whatever their
# timeout (gRPC on UNAVAILABLE, i.e. a dead collector; HTTP on 429/502/503/504), in sleeps
# shutdown cannot cut short, and force_flush/shutdown wait for each queued batch in turn.
# Since 1.35 a batch is bounded by the timeout, but a flush still takes up to a timeout per
# batch. So each call into the exporter runs on a daemon thread of its own and is waited
# for no longer than the timeout (plus GRACE), and while a flush or shutdown is under way
# no longer than what is left of its window. A call that overran keeps its thread until
# the exporter returns; the calls after it wait for it within the same bounds (exports
# never run two at once) or fail, counted.


@dataclass
class _Window:
    deadline: float  # time.monotonic()
    failed: bool = False


@dataclass
class _Call(Generic[T]):
    done: bool = False
    value: T | None = None


class _CountingExporter(SpanExporter):
    def __init__(
        self, inner: SpanExporter, backlog: _Backlog, stats: ExportStats, timeout: float
    ) -> None:
        self._inner = inner
        self._backlog = backlog
        self._stats = stats
        self._timeout = timeout
        self._changed = threading.Condition()
        self._busy = False  # an export or force_flush of the exporter is running
        self._windows: list[_Window] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._backlog.leave(len(spans))
        done, result = self._bounded(lambda: self._inner.export(spans), "export")
        if done and result is SpanExportResult.SUCCESS:
            self._stats.add_exported(len(spans))
            return SpanExportResult.SUCCESS
        self._stats.add_dropped("export_failed", len(spans))
        with self._changed:
            for window in self._windows:
                window.failed = True
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        # Not behind a running export: shutting the exporter down is what cuts its retries
        # short (since 1.36).
        self._bounded(self._inner.shutdown, "shutdown", exclusive=False)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        done, flushed = self._bounded(lambda: self._inner.force_flush(timeout_millis), "flush")
        return done and flushed is True

    @contextmanager
    def window(self, seconds: float) -> Iterator[_Window]:
        """Within this block, calls into the exporter give up `seconds` from now."""
        window = _Window(time.monotonic() + seconds + GRACE)
        with self._changed:
            self._windows.append(window)
            self._changed.notify_all()
        try:
            yield window
        finally:
            with self._changed:
                self._windows.remove(window)

    def _bounded(
        self, fn: Callable[[], T], what: str, *, exclusive: bool = True
    ) -> tuple[bool, T | None]:
        """Calls fn on a thread of its own: (True, what it returned) if it returned in
        time, else (False, None) and it is left to finish on its own."""
        started = time.monotonic()
        with self._changed:
            while exclusive and self._busy:
                if not self._wait(started):
                    log.warning("OTLP exporter still busy: %s abandoned", what)
                    return False, None
            self._busy = self._busy or exclusive
        call: _Call[T] = _Call()
        # The caller's context goes along: the SDK suppresses instrumentation in it, so an
        # instrumented HTTP or gRPC client does not trace the export itself.
        context = contextvars.copy_context()

        def run() -> None:
            value: T | None = None
            try:
                value = context.run(fn)
            except Exception:
                log.exception("OTLP exporter raised in %s", what)
            with self._changed:
                call.done, call.value = True, value
                if exclusive:
                    self._busy = False
                self._changed.notify_all()

        threading.Thread(target=run, name=f"corral-otlp-{what}", daemon=True).start()
        with self._changed:
            while not call.done:
                if not self._wait(started):
                    log.warning("OTLP exporter did not return in time: %s abandoned", what)
                    return False, None
            return True, call.value

    def _wait(self, started: float) -> bool:
        """Waits (holding self._changed) for a change; False once the time is up."""
        deadline = min([started + self._timeout + GRACE, *(w.deadline for w in self._windows)])
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self._changed.wait(left)
        return True
