"""The gateway's traces, outcome and parent headers, retry wait and access log, over real
HTTP with the real openai client."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import openai
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from corral.calls import RunStatus
from corral.gateway.exchange import Exchange, configure_logging, flush_logging
from corral.providers.sim import Fault, FaultKind

from .conftest import Serve

HELLO = [{"role": "user", "content": "hello"}]
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
FAST_RETRIES = {"base_delay: 1s, max_delay: 8s,": "base_delay: 1ms, max_delay: 2ms,"}


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


async def test_each_request_is_a_trace_continuing_the_clients_and_tied_to_its_run(
    serve: Serve, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    served = await serve(tracer_provider=provider)
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    client = openai.AsyncOpenAI(
        base_url=f"{served.url}/v1",
        api_key=served.agent_key,
        default_headers={"X-Corral-Session": "t-1"},
    )
    first = await client.chat.completions.with_raw_response.create(
        model="default", messages=HELLO, max_tokens=10, extra_headers={"traceparent": traceparent}
    )
    second = await client.chat.completions.with_raw_response.create(
        model="default", messages=HELLO, max_tokens=10
    )
    requests = named(exporter, "invoke_agent support")
    assert len(requests) == 2
    one, two = requests
    assert one.kind is SpanKind.SERVER and two.kind is SpanKind.SERVER
    # The first continues the client's trace, under the client's span.
    assert trace.format_trace_id(one.context.trace_id) == CLIENT_TRACE
    assert one.parent is not None and trace.format_span_id(one.parent.span_id) == CLIENT_SPAN
    # Each answer returns the gateway's own span as its traceparent.
    returned = first.headers["traceparent"].split("-")
    assert returned[1] == CLIENT_TRACE and returned[2] == trace.format_span_id(one.context.span_id)
    run_id = first.headers["x-corral-run"]
    assert second.headers["x-corral-run"] == run_id
    # The second request is a trace of its own, tied to the run and linked to its first.
    assert two.context.trace_id != one.context.trace_id and two.parent is None
    assert one.attributes is not None and two.attributes is not None
    assert one.attributes["corral.run.id"] == two.attributes["corral.run.id"] == run_id
    assert one.attributes["gen_ai.conversation.id"] == "t-1"
    assert [link.context.span_id for link in two.links] == [one.context.span_id]
    record = await served.sup.store.get_run(run_id)
    assert record is not None and record.trace_id == CLIENT_TRACE
    # Each request's model call is a child of that request's span.
    calls = named(exporter, "chat default")
    assert [call.parent.span_id for call in calls if call.parent] == [
        one.context.span_id,
        two.context.span_id,
    ]


async def test_an_outcome_ends_the_run_and_a_failure_outcome_is_no_success(
    serve: Serve, provider: TracerProvider
) -> None:
    served = await serve(tracer_provider=provider)
    client = openai.AsyncOpenAI(
        base_url=f"{served.url}/v1",
        api_key=served.agent_key,
        default_headers={"X-Corral-Session": "t-2"},
    )
    done = await client.chat.completions.with_raw_response.create(
        model="default",
        messages=HELLO,
        max_tokens=10,
        extra_headers={"X-Corral-Outcome": "resolved"},
    )
    failed = await client.chat.completions.with_raw_response.create(
        model="default", messages=HELLO, max_tokens=10, extra_headers={"X-Corral-Outcome": "failed"}
    )
    first, second = done.headers["x-corral-run"], failed.headers["x-corral-run"]
    assert first != second  # the session's next request opened a new run
    for run_id, outcome in ((first, "resolved"), (second, "failed")):
        record = await served.sup.store.get_run(run_id)
        assert record is not None
        assert (record.status, record.outcome) == (RunStatus.COMPLETED, outcome)
    kpis = served.sup.kpis
    assert kpis.ratio("corral_task_success_ratio", "operational") == 0.5


async def test_a_parent_run_of_another_team_is_refused(serve: Serve) -> None:
    served = await serve()
    analyzer = await served.key("analyzer")
    async with served.client(analyzer) as client:
        parent = await client.post(
            "/v1/chat/completions", json={"model": "default", "messages": HELLO, "max_tokens": 5}
        )
    parent_id = parent.headers["x-corral-run"]
    async with served.client(await served.key("verifier")) as client:
        child = await client.post(
            "/v1/chat/completions",
            json={"model": "default", "messages": HELLO, "max_tokens": 5},
            headers={"X-Corral-Parent-Run": parent_id},
        )
    assert child.status_code == 200
    stored = await served.sup.store.get_run(child.headers["x-corral-run"])
    assert stored is not None and stored.parent_run_id == parent_id
    async with served.client() as client:  # support is of no team
        refused = await client.post(
            "/v1/chat/completions",
            json={"model": "default", "messages": HELLO, "max_tokens": 5},
            headers={"X-Corral-Parent-Run": parent_id},
        )
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "policy.denied" and "not of this agent's team" in error["message"]


async def test_overhead_leaves_out_the_wait_between_retries(serve: Serve) -> None:
    served = await serve(
        edits={"base_delay: 1s, max_delay: 8s,": "base_delay: 200ms, max_delay: 200ms,",
               "jitter: full": "jitter: none"}
    )  # fmt: skip
    served.sim.set_fault("gpt-4o", Fault(FaultKind.ERROR, status=503))
    async with served.client() as client:
        answer = await client.post(
            "/v1/chat/completions", json={"model": "default", "messages": HELLO, "max_tokens": 5}
        )
    assert answer.status_code == 200
    waited = float(answer.headers["x-corral-retry-wait-ms"])
    assert waited == pytest.approx(4 * 200.0)  # 5 attempts on smart, 4 pauses of 200 ms
    assert float(answer.headers["x-corral-overhead-ms"]) < waited


async def test_one_access_line_per_request(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    served = await serve()
    with caplog.at_level(logging.INFO, logger="corral.access"):
        async with served.client() as client:
            ok = await client.post(
                "/v1/chat/completions",
                json={"model": "default", "messages": HELLO, "max_tokens": 5},
            )
            missing = await client.get("/nowhere")
    # Each line is written once the request is done with (its run of its own completed).
    lines = {r.getMessage().split(" ")[1]: r for r in caplog.records if r.name == "corral.access"}
    assert set(lines) == {"/v1/chat/completions", "/nowhere"}
    run_id = ok.headers["x-corral-run"]
    assert (
        lines["/v1/chat/completions"]
        .getMessage()
        .startswith(f"POST /v1/chat/completions 200 agent=support run={run_id} ")
    )
    assert lines["/nowhere"].getMessage().startswith("GET /nowhere 404 agent=- run=- ")
    assert missing.status_code == 404
    fields = lines["/v1/chat/completions"].__dict__["corral"]
    assert (fields["status"], fields["agent"], fields["run"]) == (200, "support", run_id)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    names = ("corral", "uvicorn", "uvicorn.error", "corral.access")
    saved = [
        (log, log.handlers[:], log.level, log.propagate) for log in map(logging.getLogger, names)
    ]
    yield
    flush_logging()
    for log, handlers, level, propagate in saved:
        log.handlers[:], log.propagate = handlers, propagate
        log.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_serve_logs_access_lines_as_json_and_can_turn_them_off(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = Exchange("POST", "/v1/chat/completions", agent="support", run_id="run_1")
    configure_logging("json", access_log=True)
    line.log(200, 0.0123)
    flush_logging()  # lines are written by a thread of their own
    logged = orjson.loads(capsys.readouterr().err.strip())
    assert logging.getLogger("uvicorn.error").handlers == logging.getLogger("corral").handlers
    assert logged["logger"] == "corral.access" and logged["level"] == "info"
    assert {k: logged[k] for k in ("method", "path", "status", "agent", "run", "ms")} == {
        "method": "POST", "path": "/v1/chat/completions", "status": 200,
        "agent": "support", "run": "run_1", "ms": 12.3,
    }  # fmt: skip
    configure_logging("text", access_log=False)
    line.log(200, 0.0123)
    configure_logging("json", access_log=True, level="warning")  # above info: off too
    line.log(200, 0.0123)
    flush_logging()
    assert capsys.readouterr().err == ""
    configure_logging("text", access_log=True)
    line.log(404, 0.002)
    flush_logging()
    assert "POST /v1/chat/completions 404 agent=support run=run_1 2.0ms" in capsys.readouterr().err


async def test_without_a_tracer_the_clients_trace_is_not_taken_for_ours(serve: Serve) -> None:
    served = await serve()  # no provider: OpenTelemetry's global one, a no-op
    async with served.client(traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01") as client:
        answer = await client.post(
            "/v1/chat/completions", json={"model": "default", "messages": HELLO, "max_tokens": 5}
        )
    assert "traceparent" not in answer.headers
    record = await served.sup.store.get_run(answer.headers["x-corral-run"])
    assert record is not None and record.trace_id != CLIENT_TRACE and record.trace_span is None


async def test_an_outcome_on_a_request_that_failed_does_not_end_the_session(serve: Serve) -> None:
    served = await serve(edits=FAST_RETRIES)
    body = {"model": "default", "messages": HELLO, "max_tokens": 5}
    async with served.client(**{"X-Corral-Session": "t-3"}) as client:
        first = await client.post("/v1/chat/completions", json=body)
        for model in ("gpt-4o", "gpt-4o-mini"):
            served.sim.set_fault(model, Fault(FaultKind.ERROR, status=503))
        failed = await client.post(
            "/v1/chat/completions", json=body, headers={"X-Corral-Outcome": "resolved"}
        )
        for model in ("gpt-4o", "gpt-4o-mini"):
            served.sim.set_fault(model, None)
        again = await client.post("/v1/chat/completions", json=body)
    assert failed.status_code == 502  # no model on the route answered
    run_id = first.headers["x-corral-run"]
    assert again.headers["x-corral-run"] == run_id  # the same run goes on
    record = await served.sup.store.get_run(run_id)
    assert record is not None and record.status is RunStatus.RUNNING


async def test_a_parent_of_another_team_is_refused_on_a_session_already_open(
    serve: Serve,
) -> None:
    served = await serve()
    body = {"model": "default", "messages": HELLO, "max_tokens": 5}
    async with served.client(await served.key("analyzer")) as client:
        parent = (await client.post("/v1/chat/completions", json=body)).headers["x-corral-run"]
    async with served.client(**{"X-Corral-Session": "t-4"}) as client:  # support
        opened = await client.post("/v1/chat/completions", json=body)
        refused = await client.post(
            "/v1/chat/completions", json=body, headers={"X-Corral-Parent-Run": parent}
        )
    assert opened.status_code == 200 and refused.status_code == 403
    assert refused.json()["error"]["code"] == "policy.denied"
