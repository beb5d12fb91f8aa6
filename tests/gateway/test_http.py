"""The gateway over plain HTTP: keys, admin routes, limits, kill, failures, bad requests
(malformed, too deep, not JSON, wrong method) and faults of its own."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest

from corral.calls import RunStatus
from corral.gateway.app import MAX_JSON_DEPTH
from corral.gateway.openai_wire import OpenAIDoor, OpenAIStream
from corral.providers.sim import Fault, FaultKind, Script, SimReply
from corral.runtime import operations
from tests.gateway.conftest import ADMIN_KEY, Serve, tool_turn

USER = [{"role": "user", "content": "hi"}]
CHAT = {"model": "default", "messages": USER}


async def test_keys_unknown_revoked_expired_and_admin_keys_are_refused(serve: Serve) -> None:
    gw = await serve(key_cache_seconds=0.0)
    async with gw.client() as client:
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    async with gw.client("ck_nonsense") as client:
        refused = await client.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "unknown key"
    async with httpx.AsyncClient(base_url=gw.url) as client:
        anonymous = await client.post("/v1/chat/completions", json=CHAT)
    assert anonymous.status_code == 401

    short_lived = await gw.key(expires_in=0.3)
    async with gw.client(short_lived) as client:
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        await asyncio.sleep(0.4)
        expired = await client.post("/v1/chat/completions", json=CHAT)
    assert (expired.status_code, expired.json()["error"]["message"]) == (401, "key expired")

    [record] = [k for k in await gw.sup.store.list_agent_keys() if k.expires_at is None and k.agent]
    assert await gw.sup.store.revoke_agent_key(record.id, time.time())
    async with gw.client() as client:
        revoked = await client.post("/v1/chat/completions", json=CHAT)
    assert (revoked.status_code, revoked.json()["error"]["message"]) == (401, "key revoked")

    admin_key = await gw.key(agent=None)
    async with gw.client(admin_key) as client:
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 401
        assert (await client.get("/admin/runs")).status_code == 200


async def test_x_api_key_header_authenticates(serve: Serve) -> None:
    gw = await serve()
    async with httpx.AsyncClient(base_url=gw.url, headers={"x-api-key": gw.agent_key}) as client:
        answer = await client.post(
            "/v1/messages", json={"model": "fast", "max_tokens": 10, "messages": USER}
        )
    assert answer.status_code == 200 and answer.json()["type"] == "message"


async def test_admin_routes_refuse_agent_keys_and_no_key(serve: Serve) -> None:
    gw = await serve()
    routes = [
        ("GET", "/admin/runs"),
        ("GET", "/admin/dlq"),
        ("GET", "/admin/breakers"),
        ("POST", "/admin/policy/reload"),
        ("GET", "/admin/audit/verify"),
        ("POST", "/admin/runs/run_x/kill"),
    ]
    async with gw.client() as agent, httpx.AsyncClient(base_url=gw.url) as nobody:
        for method, path in routes:
            assert (await agent.request(method, path)).status_code == 403, path
            assert (await nobody.request(method, path)).status_code == 401, path
    async with gw.admin() as admin:
        for method, path in routes[:5]:
            assert (await admin.request(method, path)).status_code == 200, path
        assert (await admin.post("/admin/runs/run_x/kill")).status_code == 404


async def test_open_routes(serve: Serve) -> None:
    gw = await serve()
    async with httpx.AsyncClient(base_url=gw.url) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        spec = (await client.get("/openapi.json")).json()
        assert "/v1/chat/completions" in spec["paths"]
    async with gw.client() as client:
        await client.post("/v1/chat/completions", json=CHAT)
        models = (await client.get("/v1/models")).json()
        metrics = (await client.get("/metrics")).text
    assert [m["id"] for m in models["data"]] == ["fast", "smart", "default"]
    assert 'corral_gateway_requests_total{route="/v1/chat/completions",status="200"} 1.0' in metrics
    assert "corral_gateway_overhead_seconds_count 1.0" in metrics


async def test_200_concurrent_requests_in_one_session_stay_under_the_usd_cap(
    serve: Serve,
) -> None:
    gw = await serve(
        {"requests_per_minute: 600": "requests_per_minute: 100000", "steps: 40": "steps: 1000"}
    )
    # Every answer is as long as it may be: 500 tokens of gpt-4o output is 0.005 USD,
    # so 200 of them would spend 1 USD against the task cap of 0.20.
    gw.sim.set_script("gpt-4o", Script.of(SimReply("x", output_tokens=500)))
    body = {**CHAT, "max_tokens": 500}
    async with gw.client(**{"X-Corral-Session": "burst"}) as client:
        answers = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=body) for _ in range(200))
        )
    statuses = sorted({a.status_code for a in answers})
    assert statuses == [200, 403]
    halts = {a.json()["error"]["code"] for a in answers if a.status_code == 403}
    assert halts == {"budget.cost"}
    [run] = await gw.sup.store.list_runs(session="burst")
    assert run.status is RunStatus.HALTED
    assert 0.15 < run.cost_usd <= 0.20
    steps = await gw.sup.store.list_steps(run.id)
    assert sum(s.cost_usd for s in steps) == pytest.approx(run.cost_usd)


async def test_kill_through_the_admin_api_stops_a_stream_within_a_second(serve: Serve) -> None:
    gw = await serve()
    gw.sim.set_fault("gpt-4o", Fault(FaultKind.SLOW_STREAM, delay=0.5))
    gw.sim.set_script("gpt-4o", Script.of("a b c d e f g h i j k l m n o p q r s t u v w x y z"))
    body = {**CHAT, "stream": True}
    events: list[str] = []
    async with (
        gw.client(**{"X-Corral-Session": "k"}) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as stream,
    ):
        assert stream.status_code == 200
        run_id = stream.headers["x-corral-run"]
        lines = stream.aiter_lines()
        events.append(await anext(lines))
        async with gw.admin() as admin:
            killed = await admin.post(f"/admin/runs/{run_id}/kill")
        asked = time.monotonic()
        assert killed.status_code == 200
        async for line in lines:
            events.append(line)
        ended = time.monotonic() - asked
    assert ended < 1.0
    last = orjson.loads([e for e in events if e.startswith("data: ")][-1][6:])
    assert last["error"]["type"] == "corral_halt" and last["error"]["code"] == "killed"
    run = await gw.sup.store.get_run(run_id)
    assert run is not None and run.halt_reason == "killed"


async def test_upstream_down_is_a_502_and_the_session_goes_on(serve: Serve) -> None:
    gw = await serve({"max_attempts: 5": "max_attempts: 1"})
    gw.sim.set_fault(None, Fault(FaultKind.ERROR, status=500))
    async with gw.client(**{"X-Corral-Session": "down"}) as client:
        down = await client.post("/v1/chat/completions", json=CHAT)
        assert down.status_code == 502
        error = down.json()["error"]
        assert (error["type"], error["code"]) == ("upstream_error", "provider_unavailable")
        assert "smart" in error["message"] and "fast" in error["message"]
        gw.sim.set_fault(None, None)
        back = await client.post("/v1/chat/completions", json=CHAT)
    assert back.status_code == 200
    assert back.headers["x-corral-run"] == down.headers["x-corral-run"]


async def test_upstream_timeouts_are_a_504(serve: Serve) -> None:
    gw = await serve(
        {
            "max_attempts: 5": "max_attempts: 1",
            "api_key_env: SIM_API_KEY}": "api_key_env: SIM_API_KEY, timeout: 200ms}",
        }
    )
    gw.sim.set_fault(None, Fault(FaultKind.HANG, delay=2))
    async with gw.client() as client:
        answer = await client.post("/v1/chat/completions", json=CHAT)
    assert answer.status_code == 504


async def test_rate_limit_past_its_wait_is_a_429_with_retry_after(serve: Serve) -> None:
    gw = await serve(
        {
            "requests_per_minute: 600, tokens_per_minute: 200000, priority: high}": (
                "requests_per_minute: 1, priority: high, max_wait: 10ms}"
            )
        }
    )
    async with gw.client() as client:
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        limited = await client.post("/v1/chat/completions", json=CHAT)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["type"] == "rate_limit_error"


def _oai_error(status: int, type_: str, param: str | None = None) -> dict[str, Any]:
    return {"status": status, "type": type_, "param": param}


MALFORMED: list[tuple[str, str, Any, dict[str, str], dict[str, Any]]] = [
    # (id, path, body (bytes are sent as-is), extra headers, expected)
    ("not json", "/v1/chat/completions", b"{nope", {}, _oai_error(400, "invalid_request_error")),
    ("empty", "/v1/chat/completions", b"", {}, _oai_error(400, "invalid_request_error")),
    ("array", "/v1/chat/completions", [1], {}, _oai_error(400, "invalid_request_error")),
    (
        "no model",
        "/v1/chat/completions",
        {"messages": USER},
        {},
        _oai_error(400, "invalid_request_error", "model"),
    ),
    (
        "messages not a list",
        "/v1/chat/completions",
        {"model": "fast", "messages": "hi"},
        {},
        _oai_error(400, "invalid_request_error", "messages"),
    ),
    (
        "bad role",
        "/v1/chat/completions",
        {"model": "fast", "messages": [{"role": "bot", "content": "x"}]},
        {},
        _oai_error(400, "invalid_request_error", "messages[0].role"),
    ),
    (
        "max_tokens string",
        "/v1/chat/completions",
        {**CHAT, "max_tokens": "ten"},
        {},
        _oai_error(400, "invalid_request_error", "max_tokens"),
    ),
    (
        "unknown model",
        "/v1/chat/completions",
        {"model": "gpt-9", "messages": USER},
        {},
        _oai_error(404, "not_found_error", "model"),
    ),
    (
        "tool result for no call",
        "/v1/chat/completions",
        {
            "model": "fast",
            "messages": [
                *USER,
                {"role": "assistant", "content": "ok"},
                {"role": "tool", "tool_call_id": "nope", "content": "x"},
            ],
        },
        {},
        _oai_error(400, "invalid_request_error", "messages[2].tool_call_id"),
    ),
    (
        "session header too long",
        "/v1/chat/completions",
        CHAT,
        {"X-Corral-Session": "s" * 201},
        _oai_error(400, "invalid_request_error"),
    ),
    ("too large", "/v1/chat/completions", b"x" * 2048, {}, _oai_error(413, "request_too_large")),
]


@pytest.mark.parametrize(
    ("path", "body", "headers", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in MALFORMED],
)
async def test_malformed_openai_requests(
    serve: Serve, path: str, body: Any, headers: dict[str, str], expected: dict[str, Any]
) -> None:
    gw = await serve(max_body=1024)
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    async with gw.client(**headers) as client:
        answer = await client.post(path, content=content)
    assert answer.status_code == expected["status"], answer.text
    error = answer.json()["error"]
    assert error["type"] == expected["type"]
    if expected["param"] is not None:
        assert error["param"] == expected["param"]
    assert error["message"]
    assert sum(gw.sim.requests.values()) == 0


ANTHROPIC_MALFORMED = [
    ("no max_tokens", {"model": "fast", "messages": USER}, 400),
    (
        "bad role",
        {"model": "fast", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
        400,
    ),
    ("unknown model", {"model": "claude-9", "max_tokens": 5, "messages": USER}, 404),
    (
        "block type",
        {
            "model": "fast",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": [{"type": "nope"}]}],
        },
        400,
    ),
]


@pytest.mark.parametrize(
    ("body", "status"), [pytest.param(*case[1:], id=case[0]) for case in ANTHROPIC_MALFORMED]
)
async def test_malformed_anthropic_requests_answer_in_anthropic_shape(
    serve: Serve, body: Any, status: int
) -> None:
    gw = await serve()
    async with httpx.AsyncClient(base_url=gw.url, headers={"x-api-key": gw.agent_key}) as client:
        answer = await client.post("/v1/messages", json=body)
    assert answer.status_code == status, answer.text
    shaped = answer.json()
    assert shaped["type"] == "error" and shaped["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/chat/completions", "POST"),
        ("PUT", "/v1/messages", "POST"),
        ("POST", "/healthz", "GET"),
        ("DELETE", "/v1/models", "GET"),
        ("GET", "/admin/runs/run_x/kill", "POST"),
        ("POST", "/admin/runs", "GET"),
    ],
)
async def test_a_wrong_method_is_405_with_allow(
    serve: Serve, method: str, path: str, allow: str
) -> None:
    gw = await serve()
    key = ADMIN_KEY if path.startswith("/admin/") else gw.agent_key
    async with gw.client(key) as client:
        answer = await client.request(method, path)
    assert (answer.status_code, answer.headers["allow"]) == (405, allow), answer.text
    assert f"takes {allow}, not {method}" in answer.json()["error"]["message"]


async def test_an_unknown_path_is_404(serve: Serve) -> None:
    gw = await serve()
    async with gw.client() as client:
        assert (await client.get("/v2/nothing")).status_code == 404


def nested(levels: int) -> bytes:
    """A chat body whose arrays and objects nest `levels` deep, in a content part (as text:
    JSON encoders stop short of the deepest)."""
    chain = levels - 5  # the body, messages, a message, its content, a part
    part = b'{"type": "text", "text": "hi", "extra": ' + b"[" * chain + b"1" + b"]" * chain
    return (
        b'{"model": "default", "max_tokens": 5, "messages": [{"role": "user", "content": [%s}]}]}'
        % part
    )


async def test_a_body_nested_to_the_depth_limit_is_served(serve: Serve) -> None:
    gw = await serve()
    async with gw.client() as client:
        answer = await client.post("/v1/chat/completions", content=nested(MAX_JSON_DEPTH))
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 254, 1000])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_a_body_nested_past_the_limit_is_a_400_naming_it(
    serve: Serve, path: str, levels: int
) -> None:
    gw = await serve()
    async with gw.client() as client:
        answer = await client.post(path, content=nested(levels))
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["message"] == (
        "the body nests deeper than 64 levels at messages[0].content[0].extra[0]..."
    )
    assert await gw.sup.store.list_runs() == []


async def test_an_admin_body_nested_past_the_limit_is_a_400(serve: Serve) -> None:
    gw = await serve()
    body: Any = {}
    for _ in range(100):
        body = {"add_usd": body}
    async with gw.admin() as admin:
        answer = await admin.post("/admin/dlq/run_x/retry", json=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith(
        "the body nests deeper than 64 levels at add_usd.add_usd."
    )


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "",
    ],
)
async def test_a_body_that_is_not_json_by_its_content_type_is_415(
    serve: Serve, content_type: str
) -> None:
    gw = await serve()
    content = orjson.dumps({**CHAT, "max_tokens": 5})
    sent = {"Content-Type": content_type}
    async with gw.client() as client:
        openai = await client.post("/v1/chat/completions", content=content, headers=sent)
        anthropic = await client.post("/v1/messages", content=content, headers=sent)
    assert (openai.status_code, anthropic.status_code) == (415, 415)
    assert openai.json()["error"]["code"] == "unsupported_media_type"
    assert anthropic.json()["type"] == "error"
    assert "JSON" in anthropic.json()["error"]["message"]
    assert sum(gw.sim.requests.values()) == 0


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "Application/JSON; charset=UTF-8", "application/vnd.corral+json"],
)
async def test_json_content_types_are_accepted(serve: Serve, content_type: str) -> None:
    gw = await serve()
    async with gw.client() as client:
        answer = await client.post(
            "/v1/chat/completions",
            content=orjson.dumps(CHAT),
            headers={"Content-Type": content_type},
        )
    assert answer.status_code == 200, answer.text


async def test_admin_bodies_are_json_and_an_empty_one_may_say_anything(serve: Serve) -> None:
    gw = await serve()
    async with gw.admin() as admin:
        xml = await admin.post(
            "/admin/dlq/run_x/retry", content=b"<topup/>", headers={"Content-Type": "text/xml"}
        )
        empty = await admin.post(
            "/admin/runs/run_x/kill", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
    assert xml.status_code == 415
    assert empty.status_code == 404  # past the body: no such run


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=", "query parameter 'status' is empty: give a value, or leave it out"),
        ("agent=&limit=5", "query parameter 'agent' is empty: give a value, or leave it out"),
        ("status=running&status=halted", "query parameter 'status' is given more than once"),
    ],
)
async def test_empty_and_repeated_admin_filters_are_refused(
    serve: Serve, query: str, message: str
) -> None:
    gw = await serve()
    async with gw.admin() as admin:
        answer = await admin.get(f"/admin/runs?{query}")
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == message


def raising(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("a fault of the gateway's own")


async def test_an_unexpected_failure_is_a_500_with_a_request_id_and_the_call_recorded(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await serve()
    # The upstream answers and the call is charged; writing the answer out then fails.
    monkeypatch.setattr(OpenAIDoor, "answer", raising)
    async with gw.client() as client:
        answer = await client.post("/v1/chat/completions", json=CHAT)
    assert answer.status_code == 500
    request_id = answer.headers["x-corral-request-id"]
    error = answer.json()["error"]
    assert error["type"] == "internal_error"
    assert request_id in error["message"] and "RuntimeError" not in error["message"]
    run_id = answer.headers["x-corral-run"]
    assert error["run_id"] == run_id
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    [entry] = [e for e in await gw.sup.store.list_audit() if e.kind == "gateway.error"]
    assert entry.run_id == run_id
    assert entry.payload == {
        "request_id": request_id,
        "error": "RuntimeError: a fault of the gateway's own",
    }
    run = await gw.sup.store.get_run(run_id)
    assert run is not None and run.steps == 1 and run.cost_usd > 0


async def test_an_unexpected_failure_mid_stream_ends_it_with_the_request_id(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await serve()
    monkeypatch.setattr(OpenAIStream, "end", raising)
    async with (
        gw.client() as client,
        client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as stream,
    ):
        assert stream.status_code == 200
        run_id = stream.headers["x-corral-run"]
        events = [line async for line in stream.aiter_lines() if line.startswith("data: ")]
    error = orjson.loads(events[-1].removeprefix("data: "))["error"]
    assert (error["type"], error["run_id"]) == ("internal_error", run_id)
    [entry] = [e for e in await gw.sup.store.list_audit() if e.kind == "gateway.error"]
    assert entry.run_id == run_id and entry.payload["request_id"] in error["message"]


async def test_an_unexpected_failure_outside_a_run_is_a_500_and_audited(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await serve()
    monkeypatch.setattr(operations, "list_breakers", raising)
    async with gw.admin() as admin:
        answer = await admin.get("/admin/breakers")
    assert answer.status_code == 500
    request_id = answer.headers["x-corral-request-id"]
    [entry] = [e for e in await gw.sup.store.list_audit() if e.kind == "gateway.error"]
    assert (entry.run_id, entry.payload["request_id"]) == (None, request_id)


async def test_tool_outside_the_allowlist_halts_policy_denied(serve: Serve) -> None:
    gw = await serve()
    messages = [*USER, *tool_turn("c1", "drop_tables", "{}", "done")]
    async with gw.client() as client:
        answer = await client.post(
            "/v1/chat/completions", json={"model": "default", "messages": messages}
        )
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "policy.denied"
    assert sum(gw.sim.requests.values()) == 0


async def test_a_retried_request_does_not_count_its_tool_results_twice(serve: Serve) -> None:
    gw = await serve()
    messages = [*USER, *tool_turn("c1", "get_customer", '{"customer_id": 1}', "Ada")]
    body = {"model": "default", "messages": messages}
    async with gw.client(**{"X-Corral-Session": "again"}) as client:
        for _ in range(2):
            assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    [run] = await gw.sup.store.list_runs(session="again")
    assert (run.steps, run.tool_calls) == (3, 1)  # two model calls, one tool call
    statuses = [s.status for s in await gw.sup.store.list_steps(run.id)]
    assert statuses == ["ok", "ok", "replayed", "ok"]


async def test_idle_sessions_complete_and_a_restart_resumes_a_session(serve: Serve) -> None:
    gw = await serve(session_idle=3600)
    async with gw.client(**{"X-Corral-Session": "long"}) as client:
        first = await client.post("/v1/chat/completions", json=CHAT)
    run_id = first.headers["x-corral-run"]
    # Another gateway on the same store picks the session's run up again once the first
    # is gone (here: its lease dropped, as by a clean shutdown) ...
    other = await serve()
    async with other.client(other.agent_key, **{"X-Corral-Session": "long"}) as client:
        refused = await client.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 409 and "another gateway process" in refused.text  # not yet
    await gw.sup.store.drop_leases([gw.sup.owner])
    async with other.client(other.agent_key, **{"X-Corral-Session": "long"}) as client:
        again = await client.post("/v1/chat/completions", json=CHAT)
    assert again.headers["x-corral-run"] == run_id
    assert await other.app.sessions.end_idle() == 0  # in use a moment ago
    assert await other.app.sessions.end_idle(idle=0.0) == 1
    run = await other.sup.store.get_run(run_id)
    assert run is not None and run.status is RunStatus.COMPLETED and run.steps == 2


async def test_a_client_that_hangs_up_mid_stream_stops_the_call(serve: Serve) -> None:
    gw = await serve()
    gw.sim.set_fault("gpt-4o", Fault(FaultKind.SLOW_STREAM, delay=0.3))
    gw.sim.set_script("gpt-4o", Script.of("a b c d e f g h i j k l m n o p q r s t u v w x y z"))
    async with (
        gw.client(**{"X-Corral-Session": "gone"}) as client,
        client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as stream,
    ):
        run_id = stream.headers["x-corral-run"]
        await anext(stream.aiter_lines())
    # The client is gone; the call is cancelled and recorded as such, the run goes on.
    for _ in range(100):
        steps = await gw.sup.store.list_steps(run_id)
        if steps:
            break
        await asyncio.sleep(0.02)
    assert [(s.status, s.error) for s in steps] == [("error", "cancelled")]
    run = await gw.sup.store.get_run(run_id)
    assert run is not None and run.status is RunStatus.RUNNING


async def test_a_store_that_fails_answers_503_not_500(serve: Serve) -> None:
    gw = await serve()
    await gw.sup.store.close()
    async with gw.client() as client:
        answer = await client.post("/v1/chat/completions", json=CHAT)
    assert answer.status_code == 503
    assert answer.json()["error"]["type"] == "store_unavailable"


async def test_a_client_gone_mid_body_is_refused_and_reaches_no_run(serve: Serve) -> None:
    gw = await serve()
    sent: list[dict[str, Any]] = []
    messages = iter(
        [
            {"type": "http.request", "body": b'{"model": "fast", "mess', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"authorization", f"Bearer {gw.agent_key}".encode())],
    }
    await gw.app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert b"went away mid-body" in sent[1]["body"]
    assert await gw.sup.store.list_runs() == []


async def test_a_chunked_body_past_the_limit_is_refused_as_it_arrives(serve: Serve) -> None:
    gw = await serve(max_body=1024)
    chunks = iter([{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 3)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(chunks)  # a third chunk would be an error: the second passes the limit

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"authorization", f"Bearer {gw.agent_key}".encode())],
    }
    await gw.app(scope, receive, send)
    assert sent[0]["status"] == 413
    assert next(chunks, None) is not None  # not read to the end


async def test_streamed_chunks_name_the_model_that_answered(serve: Serve) -> None:
    gw = await serve()
    openai_body = {**CHAT, "stream": True}
    anthropic_body = {**CHAT, "stream": True, "max_tokens": 20}
    async with gw.client() as client:
        chunks = await client.post("/v1/chat/completions", json=openai_body)
        events = await client.post("/v1/messages", json=anthropic_body)
    data = [
        orjson.loads(line.removeprefix("data: "))
        for line in chunks.text.splitlines()
        if line.startswith("data: {")
    ]
    assert data and {chunk["model"] for chunk in data} == {"smart"}  # as non-streamed answers
    start = next(
        orjson.loads(line.removeprefix("data: "))
        for line in events.text.splitlines()
        if line.startswith("data: ") and '"message_start"' in line
    )
    assert start["message"]["model"] == "smart"
