"""The OpenAI and Anthropic adapters over real HTTP: against the simulated provider for answers
and injected faults, and against a small server of our own for error bodies the sim does not
produce (context length, content policy, HTTP-date Retry-After, odd streams).
"""

from __future__ import annotations

import email.utils
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from corral.calls import LLMCall, LLMResult, StreamDelta
from corral.policy import Model, parse_policy
from corral.providers.anthropic import AnthropicAdapter
from corral.providers.base import Adapter, FailureKind, ProviderError
from corral.providers.http import HttpClient, env_proxy
from corral.providers.openai import OpenAIAdapter
from corral.providers.sim import FAULT_HEADER, Script, SimProvider, SimReply, SimToolCall
from corral.providers.sse import Event, SSEDecoder

POLICY = """
version: 1
providers:
  oa: {{kind: openai, base_url: "{openai_url}", timeout: {timeout}}}
  an: {{kind: anthropic, base_url: "{anthropic_url}", timeout: {timeout}}}
models:
  gpt: {{provider: oa, model: gpt-sim, context_window: 128000, max_output_tokens: 500}}
  claude: {{provider: an, model: claude-sim, context_window: 200000, max_output_tokens: 500}}
"""
APIS = ("gpt", "claude")
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the weather in Paris this week?"},
]
TEXT = "Sunny on Monday, rain from Wednesday, and a cold wind over the weekend."
ARGUMENTS = {"city": "Paris", "days": ["monday", "tuesday", "wednesday"], "units": "metric"}
SCRIPTS = {
    "gpt-sim": Script.of(SimReply(TEXT, input_tokens=21, output_tokens=17)),
    "claude-sim": Script.of(SimReply(TEXT, input_tokens=21, output_tokens=17)),
    "tools": Script.of(
        SimReply(
            "Let me look that up.",
            (SimToolCall("forecast", ARGUMENTS), SimToolCall("clock")),
            input_tokens=30,
            output_tokens=40,
        )
    ),
}
FINISH = {"gpt": ("stop", "tool_calls"), "claude": ("end_turn", "tool_use")}

Build = Callable[..., tuple[Adapter, Model]]


class Sink:
    """Collects deltas, checking that the call was marked delivered before the first one."""

    def __init__(self) -> None:
        self.call: LLMCall | None = None
        self.deltas: list[StreamDelta] = []

    async def __call__(self, delta: StreamDelta) -> None:
        assert self.call is not None and self.call.delivered
        self.deltas.append(delta)

    @property
    def text(self) -> str:
        return "".join(d.text for d in self.deltas if d.tool_index is None)

    def tools(self) -> dict[int, dict[str, str]]:
        """Tool calls reassembled from their deltas, by index."""
        tools: dict[int, dict[str, str]] = {}
        for d in self.deltas:
            if d.tool_index is not None:
                tool = tools.setdefault(d.tool_index, {"id": "", "name": "", "arguments": ""})
                tool["id"] = d.tool_id or tool["id"]
                tool["name"] = d.tool_name or tool["name"]
                tool["arguments"] += d.tool_arguments
        return tools


def make_call(stream: bool, fault: str | None = None, **params: Any) -> tuple[LLMCall, Sink]:
    sink = Sink()
    if fault is not None:
        params["extra_headers"] = {FAULT_HEADER: fault}
    call = LLMCall("m", MESSAGES, params, sink=sink if stream else None)
    sink.call = call
    return call, sink


async def complete(build: Build, api: str, call: LLMCall, **options: Any) -> LLMResult:
    adapter, model = build(api, **options)
    return await adapter.complete(api, model, call)


async def failure(build: Build, api: str, call: LLMCall, **options: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await complete(build, api, call, **options)
    return caught.value


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient()
    yield http
    await http.close()


def builder(client: HttpClient, openai_url: str, anthropic_url: str) -> Build:
    """Adapters as the supervisor makes them: from a parsed policy's providers and models."""

    def build(api: str, timeout: str = "5s") -> tuple[Adapter, Model]:
        text = POLICY.format(openai_url=openai_url, anthropic_url=anthropic_url, timeout=timeout)
        policy = parse_policy(text, env={})
        model = policy.models[api]
        provider = policy.providers[model.provider]
        kind = AnthropicAdapter if provider.kind == "anthropic" else OpenAIAdapter
        return kind(client, provider.base_url, "test-key", provider.timeout), model

    return build


@pytest.fixture
async def sim() -> AsyncIterator[SimProvider]:
    async with SimProvider(scripts=SCRIPTS) as provider:
        yield provider


@pytest.fixture
def build(client: HttpClient, sim: SimProvider) -> Build:
    return builder(client, sim.openai_base_url, sim.base_url)


# --- answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("api", APIS)
async def test_text_answer_with_usage_and_finish_reason(
    build: Build, api: str, stream: bool
) -> None:
    call, sink = make_call(stream)
    result = await complete(build, api, call)
    assert result.text == TEXT
    assert result.usage.input_tokens == 21
    assert result.usage.output_tokens == 17
    assert result.finish_reason == FINISH[api][0]
    assert result.model == api
    assert result.tool_calls == ()
    assert call.delivered is stream
    if stream:
        assert len(sink.deltas) > 1  # word by word, not one piece at the end
        assert sink.text == TEXT


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("api", APIS)
async def test_tool_calls_arrive_whole(build: Build, api: str, stream: bool) -> None:
    call, sink = make_call(stream, extra_headers={"X-Sim-Script": "tools"})
    result = await complete(build, api, call)
    assert result.text == "Let me look that up."
    assert [t.name for t in result.tool_calls] == ["forecast", "clock"]
    assert json.loads(result.tool_calls[0].arguments) == ARGUMENTS
    assert json.loads(result.tool_calls[1].arguments) == {}
    assert all(t.id for t in result.tool_calls)
    assert len({t.id for t in result.tool_calls}) == 2
    assert result.finish_reason == FINISH[api][1]
    assert (result.usage.input_tokens, result.usage.output_tokens) == (30, 40)
    if stream:
        streamed = sink.tools()
        assert sorted(streamed) == [0, 1]  # numbered among tool calls, text blocks apart
        for index, tool in enumerate(result.tool_calls):
            assert streamed[index] == {
                "id": tool.id,
                "name": tool.name,
                "arguments": tool.arguments,
            }
        # The arguments came in pieces, as a model writes them.
        assert sum(1 for d in sink.deltas if d.tool_index == 0 and d.tool_arguments) > 1


@pytest.mark.parametrize("api", APIS)
async def test_streams_share_the_pool_one_after_another(build: Build, api: str) -> None:
    for _ in range(3):
        call, sink = make_call(True)
        assert (await complete(build, api, call)).text == sink.text == TEXT


# --- faults of the simulated provider -----------------------------------------------------

both = pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
apis = pytest.mark.parametrize("api", APIS)


@both
@apis
async def test_rate_limit_carries_retry_after(build: Build, api: str, stream: bool) -> None:
    call, _ = make_call(stream, "rate_limit;retry_after=2.5")
    error = await failure(build, api, call)
    assert error.kind is FailureKind.RATE_LIMITED
    assert error.status == 429
    assert error.retry_after == 2.5
    assert error.usage is None
    assert not call.delivered


@both
@apis
@pytest.mark.parametrize("status", [500, 502, 503, 529])
async def test_server_errors_are_unavailable(
    build: Build, api: str, stream: bool, status: int
) -> None:
    call, _ = make_call(stream, str(status))
    error = await failure(build, api, call)
    assert error.kind is FailureKind.UNAVAILABLE
    assert error.status == status
    assert f"HTTP {status}" in error.message


@both
@apis
async def test_reset_is_unavailable(build: Build, api: str, stream: bool) -> None:
    call, _ = make_call(stream, "reset")
    error = await failure(build, api, call)
    assert error.kind is FailureKind.UNAVAILABLE
    assert not call.delivered


@both
@apis
@pytest.mark.parametrize("fault", ["hang", "slow_first_byte;delay=30"])
async def test_no_answer_within_the_timeout_is_a_timeout(
    build: Build, api: str, stream: bool, fault: str
) -> None:
    call, _ = make_call(stream, fault)
    error = await failure(build, api, call, timeout="200ms")
    assert error.kind is FailureKind.TIMEOUT
    assert "no answer within 0.2s" in error.message
    assert error.usage is None
    assert not call.delivered


@apis
async def test_a_stream_gone_silent_is_a_timeout_with_what_it_spent(build: Build, api: str) -> None:
    call, _ = make_call(True, "slow_stream;delay=30")
    error = await failure(build, api, call, timeout="200ms")
    assert error.kind is FailureKind.TIMEOUT
    assert "went silent for over 0.2s" in error.message
    assert error.usage is not None and error.usage.input_tokens > 0


@apis
async def test_a_slow_stream_within_the_timeout_completes(build: Build, api: str) -> None:
    # The timeout bounds each wait for a chunk, not the whole answer: 0.1 s between chunks
    # adds up to more than the 1 s timeout over the twenty-odd chunks of this answer.
    call, sink = make_call(True, "slow_stream;delay=0.1")
    result = await complete(build, api, call, timeout="1s")
    assert len(sink.deltas) > 10
    assert result.text == sink.text == TEXT


# After these many frames the sim cuts the stream, with some text already delivered: OpenAI
# sends a role chunk first; Anthropic message_start, content_block_start and a ping.
CUT_AFTER_TEXT = {"gpt": 3, "claude": 5}


@apis
async def test_a_cut_stream_is_unavailable_with_partial_usage(build: Build, api: str) -> None:
    call, sink = make_call(True, f"cut_stream;after_chunks={CUT_AFTER_TEXT[api]}")
    error = await failure(build, api, call)
    assert error.kind is FailureKind.UNAVAILABLE
    assert call.delivered
    assert sink.text and TEXT.startswith(sink.text) and sink.text != TEXT
    assert error.usage is not None
    assert error.usage.output_tokens >= len(sink.deltas) > 0
    if api == "claude":
        assert error.usage.input_tokens == 21  # as message_start reported it
    else:
        assert error.usage.input_tokens >= 21  # an upper bound: OpenAI reports it at the end


@apis
@pytest.mark.parametrize("after", [0, 1])
async def test_a_stream_cut_before_any_delta_is_not_delivered(
    build: Build, api: str, after: int
) -> None:
    call, sink = make_call(True, f"cut_stream;after_chunks={after}")
    error = await failure(build, api, call)
    assert error.kind is FailureKind.UNAVAILABLE
    assert not call.delivered
    assert sink.deltas == []
    if after == 0:
        assert error.usage is None  # nothing arrived, nothing is known to be spent


@apis
async def test_a_whole_body_cut_short_is_unavailable(build: Build, api: str) -> None:
    call, _ = make_call(False, "cut_stream")
    error = await failure(build, api, call)
    assert error.kind is FailureKind.UNAVAILABLE
    assert error.usage is None


@both
@apis
async def test_malformed_json_is_unavailable(build: Build, api: str, stream: bool) -> None:
    call, _ = make_call(stream, "malformed_json")
    error = await failure(build, api, call)
    assert error.kind is FailureKind.UNAVAILABLE
    assert ("not JSON" if stream else "malformed JSON") in error.message
    assert not call.delivered


WRONG_SHAPE = {
    ("gpt", False): "a body without choices, message or usage",
    ("gpt", True): "a chunk without choices",
    ("claude", False): "a body without content or usage",
    ("claude", True): "a message_start event without its fields",
}


@both
@apis
async def test_wrong_shape_is_unavailable(build: Build, api: str, stream: bool) -> None:
    call, _ = make_call(stream, "wrong_shape")
    error = await failure(build, api, call)
    assert error.kind is FailureKind.UNAVAILABLE
    assert WRONG_SHAPE[api, stream] in error.message
    assert not call.delivered


@both
@apis
async def test_connection_refused_is_unavailable(
    client: HttpClient, api: str, stream: bool
) -> None:
    with socket.socket() as probe:  # a port nobody listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    call, _ = make_call(stream)
    error = await failure(builder(client, url + "/v1", url), api, call)
    assert error.kind is FailureKind.UNAVAILABLE
    assert "the exchange failed" in error.message


# --- error bodies and streams the sim does not produce ------------------------------------

Reply = Callable[[web.Request], Awaitable[web.StreamResponse]]


def body(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    async def reply(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.json_response(payload, status=status, headers=headers)

    return reply


def sse(*frames: bytes) -> Reply:
    async def reply(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for frame in frames:
            await response.write(frame)
        await response.write_eof()
        return response

    return reply


class Upstream:
    """A server whose reply to the next request is set by the test."""

    def __init__(self) -> None:
        self.reply: Reply = body(200, {})
        self.seen: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append({"headers": dict(request.headers), "body": await request.json()})
        return await self.reply(request)


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    server = Upstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    app.router.add_post("/v1/messages", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield server, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
def own(client: HttpClient, upstream: tuple[Upstream, str]) -> Build:
    return builder(client, upstream[1] + "/v1", upstream[1])


def anthropic_error(kind: str, message: str = "") -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


OPENAI_CONTEXT = {
    "error": {
        "message": "This model's maximum context length is 128000 tokens. However, your "
        "messages resulted in 130512 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
ANTHROPIC_CONTEXT = anthropic_error(
    "invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum"
)
ANTHROPIC_CONTEXT_WITH_OUTPUT = anthropic_error(
    "invalid_request_error",
    "input length and `max_tokens` exceed context limit: 197626 + 8192 > 200000,"
    " decrease input length or `max_tokens` and try again",
)
OPENAI_POLICY = {
    "error": {
        "message": "Your request was rejected as a result of our safety system.",
        "type": "invalid_request_error",
        "param": None,
        "code": "content_policy_violation",
    }
}
AZURE_FILTER = {
    "error": {
        "message": "The response was filtered due to the prompt triggering content management.",
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
    }
}
# A code that says what it is wins over words in the message.
OPENAI_OTHER = {
    "error": {
        "message": "max_tokens is too large for the context length of this model",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "invalid_value",
    }
}
VLLM_CONTEXT = {
    "object": "error",
    "message": "This model's maximum context length is 4096 tokens. However, you requested"
    " 5000 tokens.",
    "type": "BadRequestError",
    "param": None,
    "code": 400,
}


@both
@pytest.mark.parametrize(
    ("api", "status", "payload", "kind"),
    [
        ("gpt", 400, OPENAI_CONTEXT, FailureKind.CONTEXT_LENGTH),
        ("claude", 400, ANTHROPIC_CONTEXT, FailureKind.CONTEXT_LENGTH),
        ("claude", 400, ANTHROPIC_CONTEXT_WITH_OUTPUT, FailureKind.CONTEXT_LENGTH),
        ("gpt", 400, VLLM_CONTEXT, FailureKind.CONTEXT_LENGTH),
        ("gpt", 400, OPENAI_POLICY, FailureKind.CONTENT_POLICY),
        ("gpt", 400, AZURE_FILTER, FailureKind.CONTENT_POLICY),
        ("gpt", 400, OPENAI_OTHER, FailureKind.BAD_REQUEST),
        ("gpt", 401, {"error": {"code": "invalid_api_key"}}, FailureKind.AUTH),
        ("claude", 403, anthropic_error("permission_error"), FailureKind.AUTH),
        ("claude", 404, anthropic_error("not_found_error"), FailureKind.BAD_REQUEST),
        ("claude", 529, anthropic_error("overloaded_error"), FailureKind.UNAVAILABLE),
        ("gpt", 504, "gateway timeout", FailureKind.TIMEOUT),
    ],
)
async def test_error_bodies_map_to_the_taxonomy(
    own: Build,
    upstream: tuple[Upstream, str],
    api: str,
    status: int,
    payload: Any,
    kind: FailureKind,
    stream: bool,
) -> None:
    upstream[0].reply = body(status, payload)
    call, _ = make_call(stream)
    error = await failure(own, api, call)
    assert error.kind is kind
    assert error.status == status


async def test_retry_after_as_an_http_date(own: Build, upstream: tuple[Upstream, str]) -> None:
    when = email.utils.formatdate(time.time() + 3600, usegmt=True)
    upstream[0].reply = body(429, {"error": {"code": "rate_limit_exceeded"}}, {"Retry-After": when})
    call, _ = make_call(False)
    error = await failure(own, "gpt", call)
    assert error.kind is FailureKind.RATE_LIMITED
    assert error.retry_after is not None and 3000 < error.retry_after <= 3600


async def test_cached_prompt_tokens_are_counted_apart(
    own: Build, upstream: tuple[Upstream, str]
) -> None:
    upstream[0].reply = body(
        200,
        {
            "choices": [
                {"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": 100,
                "completion_tokens": 3,
                "prompt_tokens_details": {"cached_tokens": 40},
            },
        },
    )
    result = await complete(own, "gpt", make_call(False)[0])
    assert (result.usage.input_tokens, result.usage.cache_read_tokens) == (60, 40)


@apis
async def test_request_carries_extra_headers_stream_flags_and_max_tokens(
    own: Build, upstream: tuple[Upstream, str], api: str
) -> None:
    upstream[0].reply = body(400, {"error": {"message": "no"}})
    for stream in (False, True):
        call, _ = make_call(stream, extra_headers={"X-Trace": "t-1"}, temperature=0)
        await failure(own, api, call)
    whole, streamed = upstream[0].seen
    assert whole["headers"]["X-Trace"] == streamed["headers"]["X-Trace"] == "t-1"
    assert "extra_headers" not in whole["body"]
    assert whole["body"]["temperature"] == 0
    assert whole["body"]["max_tokens"] == 500  # the model's default when the call names none
    assert (whole["body"]["stream"], streamed["body"]["stream"]) == (False, True)
    if api == "gpt":
        assert streamed["body"]["stream_options"] == {"include_usage": True}
    else:
        assert whole["body"]["system"] == "You are terse."


# --- what a call's params may send (params.outgoing) ----------------------------------------


@both
@apis
async def test_a_call_sends_only_the_limit_the_budget_clamped(
    build: Build, api: str, stream: bool
) -> None:
    # issue 10: an SDK caller's max_completion_tokens beside the clamped max_tokens had the
    # upstream answer its 17 tokens for a hold of 3.
    call, _ = make_call(stream, max_completion_tokens=1000, max_output_tokens=2000)
    call.max_tokens = 3  # as the budget gate clamps it
    result = await complete(build, api, call)
    assert result.usage.output_tokens == 3


@apis
async def test_the_one_limit_sent_is_the_smallest_given(
    own: Build, upstream: tuple[Upstream, str], api: str
) -> None:
    upstream[0].reply = body(400, {"error": {"message": "no"}})  # only the request matters
    call, _ = make_call(False, max_completion_tokens=7, n=1, top_p=None)
    call.max_tokens = 50
    await failure(own, api, call)
    [sent] = upstream[0].seen
    assert sent["body"]["max_tokens"] == 7
    assert not {"max_completion_tokens", "n", "top_p"} & sent["body"].keys()


@apis
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"n": 2}, "n"),
        ({"best_of": 4}, "best_of"),
        ({"service_tier": "priority"}, "service_tier"),
        ({"max_completion_tokens": "lots"}, "max_completion_tokens"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"num_predict": 10_000}, "num_predict"),
    ],
)
async def test_a_field_that_could_bill_past_the_hold_is_a_bad_request_sent_nowhere(
    own: Build, upstream: tuple[Upstream, str], api: str, params: dict[str, Any], field: str
) -> None:
    error = await failure(own, api, make_call(False, **params)[0])
    assert error.kind is FailureKind.BAD_REQUEST  # not retried, no fallback
    assert error.message.startswith(f"the request cannot be sent: {field}: ")
    assert upstream[0].seen == []


def openai_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n"


def anthropic_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


MESSAGE_START = anthropic_event(
    "message_start", {"message": {"usage": {"input_tokens": 9, "output_tokens": 1}}}
)
TEXT_START = anthropic_event(
    "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
)


def anthropic_text(text: str) -> bytes:
    return anthropic_event(
        "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}}
    )


@pytest.mark.parametrize(
    ("api", "frames", "message"),
    [
        ("gpt", [openai_chunk({"content": "Hel"})], "ended before [DONE]"),
        ("claude", [MESSAGE_START, TEXT_START, anthropic_text("Hel")], "ended before message_stop"),
        (
            "gpt",
            [openai_chunk({"content": "Hel"}), b'data: {"error": {"message": "overloaded"}}\n\n'],
            "streamed an error: overloaded",
        ),
        (
            "claude",
            [
                MESSAGE_START,
                TEXT_START,
                anthropic_text("Hel"),
                anthropic_event("error", anthropic_error("overloaded_error", "busy")),
            ],
            "streamed an error: overloaded_error: busy",
        ),
    ],
)
async def test_a_stream_that_ends_without_its_last_event_is_unavailable(
    own: Build, upstream: tuple[Upstream, str], api: str, frames: list[bytes], message: str
) -> None:
    upstream[0].reply = sse(*frames)
    call, sink = make_call(True)
    error = await failure(own, api, call)
    assert error.kind is FailureKind.UNAVAILABLE
    assert message in error.message
    assert call.delivered and sink.text == "Hel"
    assert error.usage is not None and error.usage.output_tokens >= 1
    if api == "claude":
        assert error.usage.input_tokens == 9


@apis
async def test_a_json_answer_to_a_streamed_request_is_unavailable(
    own: Build, upstream: tuple[Upstream, str], api: str
) -> None:
    upstream[0].reply = body(200, {"choices": []})
    call, _ = make_call(True)
    error = await failure(own, api, call)
    assert error.kind is FailureKind.UNAVAILABLE
    assert "'application/json' to a streamed request" in error.message


async def test_a_sink_error_is_not_taken_for_a_provider_failure(
    own: Build, upstream: tuple[Upstream, str]
) -> None:
    upstream[0].reply = sse(openai_chunk({"content": "Hel"}), b"data: [DONE]\n\n")

    async def broken(delta: StreamDelta) -> None:
        raise TypeError("the caller went away")

    call = LLMCall("m", MESSAGES, sink=broken)
    with pytest.raises(TypeError, match="the caller went away"):
        await complete(own, "gpt", call)


async def test_anthropic_tool_without_input_deltas_gets_empty_object(
    own: Build, upstream: tuple[Upstream, str]
) -> None:
    tool = {"type": "tool_use", "id": "toolu_1", "name": "clock", "input": {}}
    upstream[0].reply = sse(
        MESSAGE_START,
        anthropic_event("content_block_start", {"index": 0, "content_block": tool}),
        anthropic_event("content_block_stop", {"index": 0}),
        anthropic_event(
            "message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}}
        ),
        anthropic_event("message_stop", {}),
    )
    call, sink = make_call(True)
    result = await complete(own, "claude", call)
    assert [(t.id, t.name, t.arguments) for t in result.tool_calls] == [("toolu_1", "clock", "{}")]
    assert sink.tools() == {0: {"id": "toolu_1", "name": "clock", "arguments": "{}"}}
    assert (result.usage.input_tokens, result.usage.output_tokens) == (9, 4)


# --- the event-stream decoder -------------------------------------------------------------

STREAM = (
    b": a comment\r\n"
    b'event: message_start\r\ndata: {"a": 1}\r\n\r\n'
    b"data: line one\ndata: line two\n\n"
    b"event: ping\rdata:no space\r\r"
    b"event: empty\n\n"
    b"data: [DONE]\n\n"
)
EVENTS = [
    Event("message_start", '{"a": 1}'),
    Event("", "line one\nline two"),
    Event("ping", "no space"),
    Event("", "[DONE]"),
]


@pytest.mark.parametrize("size", [1, 2, 3, 7, len(STREAM)])
def test_decoder_is_indifferent_to_chunk_boundaries(size: int) -> None:
    decoder = SSEDecoder()
    events: list[Event] = []
    for start in range(0, len(STREAM), size):
        events += decoder.feed(STREAM[start : start + size])
    assert events == EVENTS


def test_decoder_keeps_utf8_split_across_chunks() -> None:
    raw = "data: héllo ☀\n\n".encode()
    split = raw.index("☀".encode()) + 1
    decoder = SSEDecoder()
    assert decoder.feed(raw[:split]) + decoder.feed(raw[split:]) == [Event("", "héllo ☀")]


def test_the_proxy_comes_from_the_environment_once_per_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.corp")
    assert env_proxy("https://api.openai.com/v1") == "http://proxy.internal:3128"
    assert env_proxy("https://llm.corp/v1") is None
    assert env_proxy("http://localhost:4010/v1") is None  # and no HTTP_PROXY for http
