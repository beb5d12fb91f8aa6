"""The OpenAI door: request checks that name the field, answer bodies, and its bytes read by
the real `openai` client, whole and streamed."""

from __future__ import annotations

import json
from typing import Any

import openai
import orjson
import pytest

from corral.calls import LLMResult, StreamDelta, ToolCallRequest, Usage
from corral.gateway.openai_wire import OpenAIDoor
from corral.gateway.wire import ChatRequest, ClientError
from corral.providers.params import FORWARDED
from corral.providers.sim_wire import OPENAI, Answer
from tests.gateway.conftest import Canned

DOOR = OpenAIDoor()
USER = [{"role": "user", "content": "Weather in Paris?"}]
TOOL = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "fast", "messages": USER, **fields}


def request(**fields: Any) -> ChatRequest:
    return DOOR.parse(body(**fields))


# --- parse -----------------------------------------------------------------------------------


def test_minimal_request() -> None:
    assert DOOR.parse(body()) == ChatRequest("fast", USER, {}, None, False, False)


def test_fields_the_gateway_handles_are_taken_out_the_rest_pass_unchanged() -> None:
    params = {
        "tools": [TOOL],
        "tool_choice": "required",
        "response_format": {"type": "json_object"},
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END"],
        "seed": 1,
        "user": "u",
        "parallel_tool_calls": False,
        "logprobs": False,
        "service_tier": "flex",
    }
    parsed = DOOR.parse(
        body(
            max_completion_tokens=80,
            max_tokens=50,
            stream=True,
            stream_options={"include_usage": True},
            n=1,  # the one answer the budget holds: nothing to send
            **params,
        )
    )
    assert parsed.params == params
    assert parsed.max_tokens == 50
    assert parsed.stream and parsed.include_usage


@pytest.mark.parametrize(
    "limits",
    [
        {"max_completion_tokens": 1000, "max_tokens": 3},
        {"max_tokens": 1000, "max_completion_tokens": 3},
        {"max_output_tokens": 3, "max_tokens": 9},
        {"max_completion_tokens": 3},
    ],
)
def test_output_limits_fold_into_one_max_tokens_the_smallest_winning(
    limits: dict[str, int],
) -> None:
    parsed = request(**limits)
    assert parsed.max_tokens == 3
    assert parsed.params == {}  # none is forwarded beside the one the budget clamps


def test_every_forwarded_field_passes() -> None:
    valid = {"tools": [TOOL], "service_tier": "auto"}
    fields = {field: valid.get(field, 1) for field in FORWARDED}
    assert request(**fields).params == fields


def test_unknown_fields_are_refused_with_the_fields_corral_forwards() -> None:
    with pytest.raises(ClientError) as raised:
        request(n_predict=1000)
    assert raised.value.param == "n_predict"
    assert raised.value.message.startswith("n_predict: unknown field; Corral forwards only")
    assert "max_completion_tokens" not in raised.value.message
    assert all(field in raised.value.message for field in FORWARDED)
    # Null is a field not given, as OpenAI's clients send it.
    assert request(n_predict=None).params == {}


def test_a_known_field_that_bills_past_the_hold_says_why() -> None:
    with pytest.raises(ClientError) as raised:
        request(prediction={"type": "content", "content": "x" * 10_000})
    assert raised.value.message == (
        "prediction: not forwarded: rejected predicted tokens are billed as output beyond "
        "max_tokens"
    )


VALID = [
    ("max_tokens only", body(max_tokens=7), lambda r: r.max_tokens == 7),
    ("nulls are not given", body(stream=None, max_tokens=None, n=None), lambda r: not r.stream),
    (
        "developer role passes as it is",
        body(messages=[{"role": "developer", "content": "Be terse."}, *USER]),
        lambda r: r.messages[0]["role"] == "developer",
    ),
    (
        "assistant with tool calls and null content",
        body(
            messages=[
                *USER,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            ]
        ),
        lambda r: len(r.messages) == 3,
    ),
    (
        "content parts",
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                    ],
                }
            ]
        ),
        lambda r: len(r.messages[0]["content"]) == 2,
    ),
]


@pytest.mark.parametrize(
    ("payload", "check"), [pytest.param(*case[1:], id=case[0]) for case in VALID]
)
def test_valid_requests(payload: dict[str, Any], check: Any) -> None:
    assert check(DOOR.parse(payload))


def call_message(**function: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        "tool_calls": [{"id": "c1", "type": "function", "function": function}],
    }


MALFORMED: list[tuple[str, Any, str | None]] = [
    ("not an object", [1], None),
    ("no model", {"messages": USER}, "model"),
    ("empty model", body(model=""), "model"),
    ("messages missing", {"model": "fast"}, "messages"),
    ("messages empty", body(messages=[]), "messages"),
    ("messages a string", body(messages="hi"), "messages"),
    ("message not an object", body(messages=["hi"]), "messages[0]"),
    ("bad role", body(messages=[*USER, {"role": "bot", "content": "x"}]), "messages[1].role"),
    ("role missing", body(messages=[{"content": "x"}]), "messages[0].role"),
    ("content a number", body(messages=[{"role": "user", "content": 3}]), "messages[0].content"),
    (
        "user content null",
        body(messages=[{"role": "user", "content": None}]),
        "messages[0].content",
    ),
    (
        "assistant null content without tool calls",
        body(messages=[*USER, {"role": "assistant", "content": None}]),
        "messages[1].content",
    ),
    (
        "part without type",
        body(messages=[{"role": "user", "content": [{"text": "x"}]}]),
        "messages[0].content[0]",
    ),
    (
        "text part without text",
        body(messages=[{"role": "user", "content": [{"type": "text"}]}]),
        "messages[0].content[0].text",
    ),
    (
        "tool without tool_call_id",
        body(messages=[*USER, {"role": "tool", "content": "x"}]),
        "messages[1].tool_call_id",
    ),
    (
        "tool call arguments not a string",
        body(messages=[*USER, call_message(name="f", arguments={"a": 1})]),
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        "tool call without name",
        body(messages=[*USER, call_message(arguments="{}")]),
        "messages[1].tool_calls[0].function.name",
    ),
    ("max_tokens string", body(max_tokens="ten"), "max_tokens"),
    ("max_tokens zero", body(max_tokens=0), "max_tokens"),
    ("max_tokens boolean", body(max_tokens=True), "max_tokens"),
    ("max_completion_tokens negative", body(max_completion_tokens=-1), "max_completion_tokens"),
    ("stream string", body(stream="yes"), "stream"),
    ("stream_options list", body(stream_options=[]), "stream_options"),
    (
        "include_usage string",
        body(stream_options={"include_usage": "yes"}),
        "stream_options.include_usage",
    ),
    ("tools an object", body(tools={"type": "function"}), "tools"),
    ("tool not function", body(tools=[{"type": "custom", "custom": {}}]), "tools[0].type"),
    (
        "tool without name",
        body(tools=[{"type": "function", "function": {}}]),
        "tools[0].function.name",
    ),
    ("max_output_tokens float", body(max_output_tokens=3.0), "max_output_tokens"),
    (
        "one limit of two bad",
        body(max_tokens=5, max_completion_tokens="9"),
        "max_completion_tokens",
    ),
    ("n of 2", body(n=2), "n"),
    ("n of true", body(n=True), "n"),
    ("n a string", body(n="1"), "n"),
    ("best_of of 3", body(best_of=3), "best_of"),
    ("priority tier", body(service_tier="priority"), "service_tier"),
    ("fast tier", body(service_tier="fast"), "service_tier"),
    ("scale tier", body(service_tier="scale"), "service_tier"),
    ("audio output", body(modalities=["text", "audio"]), "modalities"),
    ("web search", body(web_search_options={}), "web_search_options"),
    ("legacy functions", body(functions=[{"name": "f"}]), "functions"),
    ("headers in the body", body(extra_headers={"anthropic-beta": "x"}), "extra_headers"),
    ("unknown field", body(foo=1), "foo"),
]


@pytest.mark.parametrize(
    ("payload", "param"), [pytest.param(*case[1:], id=case[0]) for case in MALFORMED]
)
def test_malformed_requests_name_the_field(payload: Any, param: str | None) -> None:
    with pytest.raises(ClientError) as raised:
        DOOR.parse(payload)
    error = raised.value
    assert (error.status, error.type, error.param) == (400, "invalid_request_error", param)
    if param is not None:
        assert error.message.startswith(f"{param}: ")


def test_bad_role_message_lists_the_roles() -> None:
    with pytest.raises(ClientError) as raised:
        DOOR.parse(body(messages=[*USER, {"role": "bot", "content": "x"}]))
    assert raised.value.message == (
        "messages[1].role: expected one of system, user, assistant, tool, developer; got 'bot'"
    )


# --- answers ---------------------------------------------------------------------------------

TEXT_RESULT = LLMResult("Sunny.", Usage(10, 3, 4, 2), "smart", finish_reason="end_turn")
TOOL_RESULT = LLMResult(
    "",
    Usage(20, 8),
    "smart",
    tool_calls=(ToolCallRequest("toolu_1", "weather", '{"city":"Paris"}'),),
    finish_reason="tool_use",
)


def answer(result: LLMResult) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(DOOR.answer(result, request(), "r1"))
    return decoded


def test_answer_built_from_a_result() -> None:
    built = answer(TEXT_RESULT)
    assert built["id"] == "chatcmpl-r1" and built["object"] == "chat.completion"
    assert built["model"] == "smart" and isinstance(built["created"], int)
    assert built["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Sunny."},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    # OpenAI counts cached prompt tokens inside prompt_tokens.
    assert built["usage"] == {
        "prompt_tokens": 16,
        "completion_tokens": 3,
        "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 4},
    }


def test_answer_with_only_tool_calls_has_null_content() -> None:
    choice = answer(TOOL_RESULT)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }


@pytest.mark.parametrize(
    ("upstream", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("tool_use", "tool_calls"),
        ("max_tokens", "length"),
        ("length", "length"),
        ("content_filter", "content_filter"),
        (None, "stop"),
    ],
)
def test_finish_reasons(upstream: str | None, finish: str) -> None:
    result = LLMResult("x", Usage(1, 1), "m", finish_reason=upstream)
    assert answer(result)["choices"][0]["finish_reason"] == finish


def test_an_openai_upstream_answer_passes_through_with_our_id_and_model() -> None:
    raw = orjson.loads(OPENAI.body(Answer(7, 1_700_000_000, "gpt-4o", "Hi.", (), 5, 2)))
    raw["system_fingerprint"] = "fp_123"
    result = LLMResult("Hi.", Usage(5, 2), "smart", finish_reason="stop", raw=raw)
    passed = answer(result)
    assert passed == {**raw, "id": "chatcmpl-r1", "model": "smart"}


def test_an_anthropic_upstream_answer_is_rewritten() -> None:
    raw = {"type": "message", "content": [{"type": "text", "text": "Hi."}]}
    result = LLMResult("Hi.", Usage(5, 2), "smart", finish_reason="end_turn", raw=raw)
    assert answer(result)["object"] == "chat.completion"


def test_error_body() -> None:
    assert orjson.loads(
        DOOR.error("corral_halt", "over budget", code="budget.cost", run_id="r-1")
    ) == {
        "error": {
            "message": "over budget",
            "type": "corral_halt",
            "param": None,
            "code": "budget.cost",
            "run_id": "r-1",
        }
    }
    plain = orjson.loads(DOOR.error("invalid_request_error", "bad", param="model"))
    assert plain == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "model", "code": None}
    }


# --- read by the real openai client ------------------------------------------------------------


def client(
    server: Canned, pieces: list[bytes], content_type: str = "text/event-stream"
) -> openai.AsyncOpenAI:
    server.pieces = pieces
    server.content_type = content_type
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)


def streamed(parsed: ChatRequest, deltas: list[StreamDelta], result: LLMResult) -> list[bytes]:
    encoder = DOOR.stream(parsed, "s1", "smart")
    pieces = [encoder.start(), *(encoder.delta(d) for d in deltas), encoder.end(result)]
    return [piece for piece in pieces if piece]


TOOL_DELTAS = [
    StreamDelta(text="Let me "),
    StreamDelta(text="look."),
    StreamDelta(tool_index=0, tool_id="call_a", tool_name="weather"),
    StreamDelta(tool_index=0, tool_arguments='{"city":'),
    StreamDelta(tool_index=0, tool_arguments='"Paris"}'),
    StreamDelta(tool_index=1, tool_id="call_b", tool_name="clock", tool_arguments="{}"),
]
TOOLS_RESULT = LLMResult(
    "Let me look.",
    Usage(30, 12, 6),
    "smart",
    tool_calls=(
        ToolCallRequest("call_a", "weather", '{"city":"Paris"}'),
        ToolCallRequest("call_b", "clock", "{}"),
    ),
    finish_reason="tool_use",
)


async def test_whole_answers_parse_in_the_openai_client(server: Canned) -> None:
    async with client(
        server, [DOOR.answer(TOOL_RESULT, request(), "r1")], "application/json"
    ) as sdk:
        completion = await sdk.chat.completions.create(model="fast", messages=USER)  # type: ignore[arg-type]
    assert completion.id == "chatcmpl-r1"
    message = completion.choices[0].message
    assert message.content is None
    assert message.tool_calls is not None
    tool_call = message.tool_calls[0]
    assert tool_call.function.name == "weather"  # type: ignore[union-attr]
    assert json.loads(tool_call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert completion.usage is not None and completion.usage.total_tokens == 28


async def test_stream_with_tool_calls_and_usage_in_the_openai_client_accumulator(
    server: Canned,
) -> None:
    parsed = request(stream=True, stream_options={"include_usage": True})
    async with (
        client(server, streamed(parsed, TOOL_DELTAS, TOOLS_RESULT)) as sdk,
        sdk.chat.completions.stream(model="fast", messages=USER) as stream,  # type: ignore[arg-type]
    ):
        texts = [event.delta async for event in stream if event.type == "content.delta"]
        final = await stream.get_final_completion()
    assert "".join(texts) == "Let me look."
    # The model that answered, as a whole answer names it, not the route asked for.
    assert final.id == "chatcmpl-s1" and final.model == "smart"
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look."
    calls = [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
    assert calls == [("call_a", "weather", '{"city":"Paris"}'), ("call_b", "clock", "{}")]
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (36, 12)
    assert final.usage.prompt_tokens_details is not None
    assert final.usage.prompt_tokens_details.cached_tokens == 6


async def test_stream_chunks_and_the_usage_chunk_only_when_asked(server: Canned) -> None:
    deltas = [StreamDelta(text="Sun"), StreamDelta(text=""), StreamDelta(text="ny.")]
    for include_usage in (False, True):
        parsed = request(stream=True, stream_options={"include_usage": include_usage})
        async with client(server, streamed(parsed, deltas, TEXT_RESULT)) as sdk:
            stream = await sdk.chat.completions.create(model="fast", messages=USER, stream=True)  # type: ignore[arg-type]
            chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Sunny."
        assert chunks[0].choices[0].delta.role == "assistant"
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finishes[-1] == "stop" and not any(finishes[:-1])
        usage = [c.usage for c in chunks if c.usage is not None]
        if include_usage:
            assert not chunks[-1].choices and [u.completion_tokens for u in usage] == [3]
        else:
            assert usage == []


async def test_stream_error_raises_in_the_openai_client(server: Canned) -> None:
    encoder = DOOR.stream(request(stream=True), "s2")
    pieces = [
        encoder.start(),
        encoder.delta(StreamDelta(text="Half")),
        encoder.error("corral_halt", "killed by an operator", code="killed", run_id="run-9"),
    ]
    async with client(server, pieces) as sdk:
        stream = await sdk.chat.completions.create(model="fast", messages=USER, stream=True)  # type: ignore[arg-type]
        seen: list[str] = []
        with pytest.raises(openai.APIError) as raised:
            async for chunk in stream:
                seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "Half"
    assert raised.value.message == "killed by an operator"
    assert raised.value.body == {
        "message": "killed by an operator",
        "type": "corral_halt",
        "param": None,
        "code": "killed",
        "run_id": "run-9",
    }
    assert b"[DONE]" not in pieces[-1]


def test_empty_deltas_send_nothing() -> None:
    encoder = DOOR.stream(request(), "s3")
    assert encoder.delta(StreamDelta()) == b""
    assert encoder.delta(StreamDelta(text="")) == b""


def test_chunks_share_their_head() -> None:
    encoder = DOOR.stream(request(), "s4", "smart")
    start = orjson.loads(encoder.start()[len(b"data: ") :])
    piece = orjson.loads(encoder.delta(StreamDelta(text="x"))[len(b"data: ") :])
    head = ("id", "object", "created", "model")
    assert [start[k] for k in head] == [piece[k] for k in head]
    assert start["object"] == "chat.completion.chunk" and start["model"] == "smart"
    # Not told who answers, the stream names the model or route the request asked for.
    unnamed = orjson.loads(DOOR.stream(request(), "s5").start()[len(b"data: ") :])
    assert unnamed["model"] == "fast"
