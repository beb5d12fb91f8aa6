"""Spans leaving the process: to a real OTLP/HTTP receiver (aiohttp, decoding the protobuf
body) and a real OTLP/gRPC server on loopback, as the policy or the environment says; and
what is lost (a dead collector, a full queue, an exporter that hangs) counted in
ExportStats, with force_flush and shutdown returning instead of waiting it out.

A synchronous flush or shutdown would block the event loop the aiohttp receiver answers
on, so async tests run them in a thread."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import (
    TraceServiceServicer,
    add_TraceServiceServicer_to_server,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from corral.policy_telemetry import Otlp, Telemetry
from corral.telemetry.export import ExportStats, _provider, tracer_provider

# --- receivers ------------------------------------------------------------------------


@dataclass
class HttpCollector:
    """An OTLP/HTTP receiver; with `hold` set, each post waits for it before answering."""

    base: str = ""
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    hold: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        self.requests.append(ExportTraceServiceRequest.FromString(await request.read()))
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )


@pytest.fixture
async def collector() -> AsyncIterator[HttpCollector]:
    got = HttpCollector()
    app = web.Application()
    app.router.add_post("/{path:.*}", got.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    got.base = f"http://{host}:{port}"
    yield got
    if got.hold is not None:
        got.hold.set()
    await runner.cleanup()


class GrpcCollector(TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.endpoint = ""

    def Export(self, request: ExportTraceServiceRequest, context: Any) -> Any:
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        return ExportTraceServiceResponse()


@pytest.fixture
def grpc_collector() -> Iterator[GrpcCollector]:
    got = GrpcCollector()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    add_TraceServiceServicer_to_server(got, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    got.endpoint = f"http://127.0.0.1:{port}"
    yield got
    server.stop(0)


def closed_port() -> int:
    """A loopback port nothing listens on (it was just bound and let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- helpers --------------------------------------------------------------------------


@pytest.fixture
def providers() -> Iterator[list[TracerProvider]]:
    """Every provider a test makes is shut down after it (a no-op if the test did)."""
    made: list[TracerProvider] = []
    yield made
    for provider in made:
        provider.shutdown()


@pytest.fixture
def stats() -> ExportStats:
    return ExportStats()


def sample(stats: ExportStats, name: str, **labels: str) -> float | None:
    registry = CollectorRegistry()
    registry.register(stats)
    return registry.get_sample_value(name, labels)


def exported(stats: ExportStats) -> float | None:
    return sample(stats, "corral_spans_exported_total")


def dropped(stats: ExportStats, reason: str) -> float | None:
    return sample(stats, "corral_spans_dropped_total", reason=reason)


def make(
    providers: list[TracerProvider],
    settings: Telemetry,
    env: dict[str, str] | None = None,
    **kwargs: Any,
) -> TracerProvider:
    provider = tracer_provider(settings, {} if env is None else env, **kwargs)
    assert provider is not None
    providers.append(provider)
    return provider


def run_and_tool(provider: TracerProvider) -> None:
    """A parent span with a child, as a run with one tool call."""
    tracer = provider.get_tracer("corral.test")
    with (
        tracer.start_as_current_span("run", attributes={"corral.agent": "support", "n": 3}),
        tracer.start_as_current_span(
            "tool.call", attributes={"corral.tool": "search", "corral.ok": True}
        ),
    ):
        pass


def end_spans(provider: TracerProvider, count: int, first: int = 0) -> None:
    tracer = provider.get_tracer("corral.test")
    for number in range(first, first + count):
        tracer.start_span(f"span-{number}").end()


def all_spans(requests: Sequence[ExportTraceServiceRequest]) -> list[Span]:
    return [
        span
        for request in requests
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]


def spans_of(requests: Sequence[ExportTraceServiceRequest]) -> dict[str, Span]:
    spans = all_spans(requests)
    assert len({span.name for span in spans}) == len(spans)
    return {span.name: span for span in spans}


def attributes(pairs: Sequence[KeyValue]) -> dict[str, object]:
    return {pair.key: getattr(pair.value, str(pair.value.WhichOneof("value"))) for pair in pairs}


def service_names(requests: Sequence[ExportTraceServiceRequest]) -> set[object]:
    return {
        attributes(resource_spans.resource.attributes).get("service.name")
        for request in requests
        for resource_spans in request.resource_spans
    }


def assert_run_and_tool(requests: Sequence[ExportTraceServiceRequest], service: str) -> None:
    spans = spans_of(requests)
    assert set(spans) == {"run", "tool.call"}
    run, tool = spans["run"], spans["tool.call"]
    assert attributes(run.attributes) == {"corral.agent": "support", "n": 3}
    assert attributes(tool.attributes) == {"corral.tool": "search", "corral.ok": True}
    assert run.parent_span_id == b""
    assert tool.parent_span_id == run.span_id
    assert tool.trace_id == run.trace_id
    assert len(run.span_id) == 8 and len(run.trace_id) == 16
    assert service_names(requests) == {service}


# --- OTLP/HTTP ------------------------------------------------------------------------


async def test_spans_arrive_at_an_otlp_http_collector_decoded(
    collector: HttpCollector, providers: list[TracerProvider], stats: ExportStats
) -> None:
    otlp = Otlp(
        endpoint=collector.base,
        headers={"Authorization": "Bearer t0ken", "X-Tenant": "acme"},
        timeout="5s",
    )
    provider = make(providers, Telemetry(otlp=otlp, service_name="corral-test"), stats=stats)

    run_and_tool(provider)
    assert await asyncio.to_thread(provider.force_flush)

    assert_run_and_tool(collector.requests, "corral-test")
    assert collector.paths == ["/v1/traces"]  # the policy's endpoint had no path
    assert collector.headers[0]["authorization"] == "Bearer t0ken"
    assert collector.headers[0]["x-tenant"] == "acme"
    assert collector.headers[0]["content-type"] == "application/x-protobuf"
    assert exported(stats) == 2
    assert dropped(stats, "export_failed") == dropped(stats, "queue_full") == 0
    await asyncio.to_thread(provider.shutdown)


@pytest.mark.parametrize(
    ("path", "posted_to"),
    [
        ("", "/v1/traces"),
        ("/", "/v1/traces"),
        ("/v1/traces", "/v1/traces"),
        ("/otlp/spans", "/otlp/spans"),
    ],
)
async def test_the_policy_endpoint_gets_v1_traces_only_without_a_path(
    collector: HttpCollector, providers: list[TracerProvider], path: str, posted_to: str
) -> None:
    provider = make(providers, Telemetry(otlp=Otlp(endpoint=collector.base + path, timeout="5s")))
    end_spans(provider, 1)
    assert await asyncio.to_thread(provider.force_flush)
    assert collector.paths == [posted_to]
    assert service_names(collector.requests) == {"corral"}


# --- what is lost, counted --------------------------------------------------------------


def test_a_dead_collector_counts_spans_as_failed_and_nothing_hangs_or_raises(
    providers: list[TracerProvider], stats: ExportStats
) -> None:
    otlp = Otlp(endpoint=f"http://127.0.0.1:{closed_port()}", timeout="200ms")
    provider = make(providers, Telemetry(otlp=otlp), stats=stats)

    end_spans(provider, 3)
    assert provider.force_flush() is False
    assert dropped(stats, "export_failed") == 3

    end_spans(provider, 2)  # still queued when shutdown starts: it tries them, and counts
    provider.shutdown()
    assert dropped(stats, "export_failed") == 5

    end_spans(provider, 1)  # after shutdown: lost, and said so
    assert dropped(stats, "shutdown") == 1
    assert exported(stats) == 0
    assert dropped(stats, "queue_full") == 0


async def test_a_full_queue_counts_the_spans_it_turns_away(
    collector: HttpCollector, providers: list[TracerProvider], stats: ExportStats
) -> None:
    collector.hold = asyncio.Event()
    otlp = Otlp(endpoint=collector.base, timeout="10s")
    provider = make(providers, Telemetry(otlp=otlp), stats=stats, max_queue_size=2)

    end_spans(provider, 2)  # a full batch: the processor's worker posts it, and is held
    await asyncio.wait_for(collector.arrived.wait(), timeout=10)
    end_spans(provider, 8, first=2)  # two fit in the queue behind it; six do not
    assert dropped(stats, "queue_full") == 6

    collector.hold.set()
    assert await asyncio.to_thread(provider.force_flush)
    assert set(spans_of(collector.requests)) == {"span-0", "span-1", "span-2", "span-3"}
    assert exported(stats) == 4
    assert dropped(stats, "queue_full") == 6
    assert dropped(stats, "export_failed") == 0
    await asyncio.to_thread(provider.shutdown)


class HungExporter(SpanExporter):
    """Blocks in export until released (as older SDKs' exporters did, retrying for a
    minute against a dead collector whatever their timeout)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.returned = threading.Event()
        self.calls = 0
        self.shut = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        self.release.wait(30)
        self.returned.set()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shut = True


def test_an_exporter_that_hangs_is_given_up_on_at_the_timeout(stats: ExportStats) -> None:
    hung = HungExporter()
    provider = _provider(hung, service_name="corral", timeout=0.1, stats=stats)
    try:
        end_spans(provider, 3)
        assert provider.force_flush() is False
        assert dropped(stats, "export_failed") == 3

        end_spans(provider, 2)  # the hung export still runs: these are not sent behind it
        provider.shutdown()
        assert dropped(stats, "export_failed") == 5
        assert hung.calls == 1
        assert hung.shut  # shutdown reached the exporter although an export hung
    finally:
        hung.release.set()
    assert hung.returned.wait(10)
    assert exported(stats) == 0  # what returned after it was given up on is not counted


# --- OTLP/gRPC ------------------------------------------------------------------------


def test_spans_arrive_at_an_otlp_grpc_collector(
    grpc_collector: GrpcCollector, providers: list[TracerProvider], stats: ExportStats
) -> None:
    otlp = Otlp(
        endpoint=grpc_collector.endpoint,
        protocol="grpc",
        headers={"X-Tenant": "acme"},
        timeout="5s",
    )
    provider = make(providers, Telemetry(otlp=otlp, service_name="corral-grpc"), stats=stats)

    run_and_tool(provider)
    assert provider.force_flush()

    assert_run_and_tool(grpc_collector.requests, "corral-grpc")
    assert grpc_collector.metadata[0]["x-tenant"] == "acme"
    assert exported(stats) == 2
    provider.shutdown()


# --- the environment ------------------------------------------------------------------


async def test_otel_exporter_otlp_endpoint_in_the_environment_is_honoured(
    collector: HttpCollector, providers: list[TracerProvider]
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.base + "/",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=acme,authorization=Bearer%20t0ken",
    }
    provider = make(providers, Telemetry(service_name="from-env"), env)

    run_and_tool(provider)
    assert await asyncio.to_thread(provider.force_flush)

    assert_run_and_tool(collector.requests, "from-env")
    assert collector.paths == ["/v1/traces"]  # a base URL, as the spec has it
    assert collector.headers[0]["x-tenant"] == "acme"
    assert collector.headers[0]["authorization"] == "Bearer t0ken"


async def test_the_traces_endpoint_is_a_full_url_and_wins(
    collector: HttpCollector, providers: list[TracerProvider]
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.base + "/custom/traces",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-signal=traces",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-signal=all",
    }
    provider = make(providers, Telemetry(), env)
    end_spans(provider, 1)
    assert await asyncio.to_thread(provider.force_flush)
    assert collector.paths == ["/custom/traces"]
    assert collector.headers[0]["x-signal"] == "traces"


def test_the_environment_can_choose_grpc(
    grpc_collector: GrpcCollector, providers: list[TracerProvider]
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": grpc_collector.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    provider = make(providers, Telemetry(), env)
    end_spans(provider, 2)
    assert provider.force_flush()
    assert set(spans_of(grpc_collector.requests)) == {"span-0", "span-1"}


async def test_the_policy_wins_over_the_environment(
    collector: HttpCollector, providers: list[TracerProvider], stats: ExportStats
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "no-such-protocol",  # not read: the policy decides
    }
    otlp = Otlp(endpoint=collector.base, timeout="5s")
    provider = make(providers, Telemetry(otlp=otlp), env, stats=stats)
    end_spans(provider, 1)
    assert await asyncio.to_thread(provider.force_flush)
    assert exported(stats) == 1


def test_nothing_named_means_no_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    assert tracer_provider(Telemetry(), {}) is None
    assert tracer_provider(Telemetry(), {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) is None
    assert tracer_provider(Telemetry(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}) is None
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracer_provider(Telemetry()) is None  # os.environ by default


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "ten"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "-1"),
    ],
)
def test_a_bad_value_in_the_environment_names_the_variable(name: str, value: str) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", name: value}
    with pytest.raises(ValueError, match=name):
        tracer_provider(Telemetry(), env)


def test_every_drop_reason_is_exposed_from_the_start(stats: ExportStats) -> None:
    assert exported(stats) == 0
    for reason in ("queue_full", "export_failed", "shutdown"):
        assert dropped(stats, reason) == 0
