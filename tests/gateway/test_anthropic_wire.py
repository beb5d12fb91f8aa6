"""The Anthropic door: request checks that name the field, answer bodies, and its bytes read by
the real `anthropic` client, whole and streamed."""

from __future__ import annotations

from typing import Any

import anthropic
import orjson
import pytest

from corral.calls import LLMResult, StreamDelta, ToolCallRequest, Usage
from corral.gateway.anthropic_wire import AnthropicDoor
from corral.gateway.wire import ChatRequest, ClientError
from corral.providers.sim_wire import ANTHROPIC, Answer, RenderedCall
from tests.gateway.conftest import Canned

DOOR = AnthropicDoor()
USER = [{"role": "user", "content": "Weather in Paris?"}]
TOOL = {"name": "weather", "input_schema": {"type": "object"}}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "fast", "max_tokens": 100, "messages": USER, **fields}


def request(**fields: Any) -> ChatRequest:
    return DOOR.parse(body(**fields))


# --- parse -----------------------------------------------------------------------------------


def test_minimal_request() -> None:
    assert DOOR.parse(body()) == ChatRequest("fast", USER, {}, 100, False, False)


def test_request_in_canonical_shape() -> None:
    parsed = DOOR.parse(
        body(
            system=[{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
            stream=True,
            tools=[TOOL],
            tool_choice={"type": "auto"},
            stop_sequences=["END"],
            temperature=0.2,
            top_k=4,
            metadata={"user_id": "u"},
            messages=[
                *USER,
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "weather", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}],
                },
            ],
        )
    )
    assert parsed.stream and parsed.max_tokens == 100 and not parsed.include_usage
    assert parsed.messages == [
        {"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
    ]
    assert parsed.params == {
        "tools": [
            {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
        ],
        "tool_choice": "auto",
        "stop": ["END"],
        "temperature": 0.2,
        "top_k": 4,
    }


MALFORMED: list[tuple[str, Any, str | None]] = [
    ("not an object", "hi", None),
    ("no model", {"max_tokens": 5, "messages": USER}, "model"),
    ("no max_tokens", {"model": "fast", "messages": USER}, "max_tokens"),
    ("max_tokens zero", body(max_tokens=0), "max_tokens"),
    ("max_tokens string", body(max_tokens="5"), "max_tokens"),
    ("max_tokens boolean", body(max_tokens=True), "max_tokens"),
    ("messages empty", body(messages=[]), "messages"),
    ("messages object", body(messages={"role": "user"}), "messages"),
    ("stream string", body(stream="yes"), "stream"),
    ("system role", body(messages=[{"role": "system", "content": "x"}]), "messages[0].role"),
    ("content number", body(messages=[{"role": "user", "content": 1}]), "messages[0].content"),
    (
        "unknown block",
        body(
            messages=[
                *USER,
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "foo"}]},
            ]
        ),
        "messages[2].content[0]",
    ),
    ("system number", body(system=3), "system"),
    ("system image", body(system=[{"type": "image", "source": {}}]), "system[0].type"),
    ("tool without schema", body(tools=[{"name": "weather"}]), "tools[0].input_schema"),
    ("tool without name", body(tools=[{"input_schema": {}}]), "tools[0].name"),
    ("tool choice", body(tool_choice={"type": "maybe"}), "tool_choice.type"),
    ("OpenAI's limit bad", body(max_completion_tokens=0), "max_completion_tokens"),
    ("n of 2", body(n=2), "n"),
    ("best_of of 2", body(best_of=2), "best_of"),
    ("service tier", body(service_tier="priority"), "service_tier"),
    ("fast mode", body(speed="fast"), "speed"),
    ("inference in one region", body(inference_geo="us"), "inference_geo"),
    ("cache writes", body(cache_control={"type": "ephemeral"}), "cache_control"),
    ("an OpenAI field", body(seed=1), "seed"),
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


@pytest.mark.parametrize(
    "limits",
    [
        {"max_tokens": 3, "max_completion_tokens": 1000},  # issue 10's: 17 tokens for a hold of 3
        {"max_tokens": 1000, "max_completion_tokens": 3},
        {"max_tokens": 1000, "max_output_tokens": 3, "n": 1},
    ],
)
def test_output_limits_fold_into_one_max_tokens_the_smallest_winning(
    limits: dict[str, int],
) -> None:
    parsed = DOOR.parse(body(**limits))
    assert parsed.max_tokens == 3
    assert parsed.params == {}  # none is forwarded beside the one the budget clamps


def test_unknown_fields_are_refused_with_the_fields_corral_forwards() -> None:
    with pytest.raises(ClientError) as raised:
        request(container="c-1", temperature=0.1)
    assert raised.value.param == "container"
    with pytest.raises(ClientError) as raised:
        request(mystery=1)
    assert raised.value.message == (
        "mystery: unknown field; Corral forwards only fields whose cost its budget can bound: "
        "metadata, service_tier, stop_sequences, temperature, thinking, tool_choice, tools, "
        "top_k, top_p (and the output limit)"
    )
    assert request(mystery=None).params == {}  # null: not given


@pytest.mark.parametrize(("tier", "canonical"), [("auto", "auto"), ("standard_only", "default")])
def test_service_tier_in_canonical_terms(tier: str, canonical: str) -> None:
    assert request(service_tier=tier).params == {"service_tier": canonical}


def test_unknown_block_message() -> None:
    with pytest.raises(ClientError) as raised:
        DOOR.parse(body(messages=[{"role": "user", "content": [{"type": "foo"}]}]))
    assert raised.value.message == "messages[0].content[0]: unknown block type 'foo'"


# --- answers ---------------------------------------------------------------------------------

TEXT_RESULT = LLMResult("Sunny.", Usage(10, 3, 4, 2), "smart", finish_reason="stop")
TOOL_RESULT = LLMResult(
    "Checking.",
    Usage(20, 8),
    "smart",
    tool_calls=(
        ToolCallRequest("call_1", "weather", '{"city":"Paris"}'),
        ToolCallRequest("call_2", "clock", ""),
    ),
    finish_reason="tool_calls",
)


def answer(result: LLMResult) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(DOOR.answer(result, request(), "r1"))
    return decoded


def test_answer_built_from_a_result() -> None:
    assert answer(TEXT_RESULT) == {
        "id": "msg_r1",
        "type": "message",
        "role": "assistant",
        "model": "smart",
        "content": [{"type": "text", "text": "Sunny."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 3,
            "cache_read_input_tokens": 4,
            "cache_creation_input_tokens": 2,
        },
    }


def test_answer_with_tool_calls() -> None:
    built = answer(TOOL_RESULT)
    assert built["stop_reason"] == "tool_use"
    assert built["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "clock", "input": {}},
    ]


@pytest.mark.parametrize("arguments", ['{"city": "Par', "[1, 2]"], ids=["cut", "array"])
def test_arguments_that_are_no_object_go_out_verbatim(arguments: str) -> None:
    result = LLMResult("", Usage(1, 1), "m", (ToolCallRequest("c", "weather", arguments),))
    assert answer(result)["content"] == [
        {"type": "tool_use", "id": "c", "name": "weather", "input": arguments}
    ]


@pytest.mark.parametrize(
    ("upstream", "stop"),
    [
        ("stop", "end_turn"),
        ("tool_calls", "tool_use"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        ("stop_sequence", "stop_sequence"),
        (None, "end_turn"),
    ],
)
def test_stop_reasons(upstream: str | None, stop: str) -> None:
    result = LLMResult("x", Usage(1, 1), "m", finish_reason=upstream)
    assert answer(result)["stop_reason"] == stop


def test_an_anthropic_upstream_answer_passes_through_with_our_id_and_model() -> None:
    call = RenderedCall("weather", '{"city":"Paris"}', {"city": "Paris"})
    raw = orjson.loads(ANTHROPIC.body(Answer(3, 0, "claude-x", "Hi.", (call,), 5, 2)))
    result = LLMResult("Hi.", Usage(5, 2), "smart", finish_reason="tool_use", raw=raw)
    assert answer(result) == {**raw, "id": "msg_r1", "model": "smart"}


def test_an_openai_upstream_answer_is_rewritten() -> None:
    raw = {"object": "chat.completion", "choices": []}
    result = LLMResult("Hi.", Usage(5, 2), "smart", finish_reason="stop", raw=raw)
    assert answer(result)["type"] == "message"


def test_error_body() -> None:
    halted = DOOR.error("corral_halt", "over budget", code="budget.cost", param="x", run_id="r-1")
    assert orjson.loads(halted) == {
        "type": "error",
        "error": {
            "type": "corral_halt",
            "message": "over budget",
            "code": "budget.cost",
            "run_id": "r-1",
        },
    }
    plain = orjson.loads(DOOR.error("invalid_request_error", "bad"))
    assert plain == {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}


# --- read by the real anthropic client ---------------------------------------------------------


def client(
    server: Canned, pieces: list[bytes], content_type: str = "text/event-stream"
) -> anthropic.AsyncAnthropic:
    server.pieces = pieces
    server.content_type = content_type
    return anthropic.AsyncAnthropic(base_url=server.url, api_key="x", max_retries=0)


def streamed(deltas: list[StreamDelta], result: LLMResult) -> list[bytes]:
    encoder = DOOR.stream(request(stream=True), "s1", "smart")
    pieces = [encoder.start(), *(encoder.delta(d) for d in deltas), encoder.end(result)]
    return [piece for piece in pieces if piece]


TOOL_DELTAS = [
    StreamDelta(text="Let me "),
    StreamDelta(text="look."),
    StreamDelta(tool_index=0, tool_id="call_a", tool_name="weather"),
    StreamDelta(tool_index=0, tool_arguments='{"city":'),
    StreamDelta(tool_index=0, tool_arguments='"Paris"}'),
    StreamDelta(tool_index=1, tool_id="call_b", tool_name="clock"),
    StreamDelta(text="Done."),
]
TOOLS_RESULT = LLMResult(
    "Let me look.Done.",
    Usage(30, 12, 6, 1),
    "smart",
    tool_calls=(
        ToolCallRequest("call_a", "weather", '{"city":"Paris"}'),
        ToolCallRequest("call_b", "clock", "{}"),
    ),
    finish_reason="tool_calls",
)


async def test_whole_answers_parse_in_the_anthropic_client(server: Canned) -> None:
    async with client(
        server, [DOOR.answer(TOOL_RESULT, request(), "r1")], "application/json"
    ) as sdk:
        message = await sdk.messages.create(model="fast", max_tokens=100, messages=USER)  # type: ignore[arg-type]
    assert message.id == "msg_r1" and message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["text", "tool_use", "tool_use"]
    use = message.content[1]
    assert use.type == "tool_use" and use.input == {"city": "Paris"} and use.name == "weather"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (20, 8)


async def test_stream_in_the_anthropic_client_accumulator(server: Canned) -> None:
    async with (
        client(server, streamed(TOOL_DELTAS, TOOLS_RESULT)) as sdk,
        sdk.messages.stream(model="fast", max_tokens=100, messages=USER) as stream,  # type: ignore[arg-type]
    ):
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "Let me look.Done."
    # The model that answered, as a whole answer names it, not the route asked for.
    assert final.id == "msg_s1" and final.model == "smart"
    assert final.stop_reason == "tool_use"
    blocks = [(b.type, getattr(b, "text", None), getattr(b, "input", None)) for b in final.content]
    assert blocks == [
        ("text", "Let me look.", None),
        ("tool_use", None, {"city": "Paris"}),
        ("tool_use", None, {}),  # no arguments streamed: the input stays the empty object
        ("text", "Done.", None),
    ]
    assert [getattr(b, "id", None) for b in final.content[1:3]] == ["call_a", "call_b"]
    usage = final.usage
    assert (usage.input_tokens, usage.output_tokens) == (30, 12)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (6, 1)


def test_stream_events_open_and_close_blocks_in_order() -> None:
    names = []
    for piece in streamed(TOOL_DELTAS, TOOLS_RESULT):
        for event in piece.split(b"\n\n"):
            if event:
                name = event.split(b"\n")[0].removeprefix(b"event: ").decode()
                data = orjson.loads(event.split(b"\ndata: ")[1])
                assert data["type"] == name
                if name.startswith("content_block_"):
                    name += f" {data['index']}"
                names.append(name)
    assert names == [
        "message_start",
        "content_block_start 0",
        "content_block_delta 0",
        "content_block_delta 0",
        "content_block_stop 0",
        "content_block_start 1",
        "content_block_delta 1",
        "content_block_delta 1",
        "content_block_stop 1",
        "content_block_start 2",
        "content_block_stop 2",
        "content_block_start 3",
        "content_block_delta 3",
        "content_block_stop 3",
        "message_delta",
        "message_stop",
    ]


async def test_late_pieces_of_an_earlier_tool_call_keep_its_block(server: Canned) -> None:
    deltas = [
        StreamDelta(tool_index=0, tool_id="a", tool_name="weather"),
        StreamDelta(tool_index=1, tool_id="b", tool_name="weather"),
        StreamDelta(tool_index=0, tool_arguments='{"city":"Paris"}'),
        StreamDelta(tool_index=1, tool_arguments='{"city":"Lyon"}'),
    ]
    async with (
        client(server, streamed(deltas, TOOLS_RESULT)) as sdk,
        sdk.messages.stream(model="fast", max_tokens=100, messages=USER) as stream,  # type: ignore[arg-type]
    ):
        final = await stream.get_final_message()
    assert [getattr(b, "input", None) for b in final.content] == [
        {"city": "Paris"},
        {"city": "Lyon"},
    ]


async def test_an_empty_answer_streams_no_block(server: Canned) -> None:
    empty = LLMResult("", Usage(3, 0), "smart", finish_reason="stop")
    async with (
        client(server, streamed([], empty)) as sdk,
        sdk.messages.stream(model="fast", max_tokens=100, messages=USER) as stream,  # type: ignore[arg-type]
    ):
        final = await stream.get_final_message()
    assert final.content == [] and final.stop_reason == "end_turn"


async def test_stream_error_raises_in_the_anthropic_client(server: Canned) -> None:
    encoder = DOOR.stream(request(stream=True), "s2")
    pieces = [
        encoder.start(),
        encoder.delta(StreamDelta(text="Half")),
        encoder.error("corral_halt", "killed by an operator", code="killed", run_id="run-9"),
    ]
    seen: list[str] = []
    async with client(server, pieces) as sdk:
        with pytest.raises(anthropic.APIStatusError) as raised:
            async with sdk.messages.stream(model="fast", max_tokens=100, messages=USER) as stream:  # type: ignore[arg-type]
                async for piece in stream.text_stream:
                    seen.append(piece)
    assert seen == ["Half"]
    assert raised.value.body == {
        "type": "error",
        "error": {
            "type": "corral_halt",
            "message": "killed by an operator",
            "code": "killed",
            "run_id": "run-9",
        },
    }
    assert pieces[-1].startswith(b"event: error\ndata: ")


def test_empty_deltas_send_nothing() -> None:
    encoder = DOOR.stream(request(), "s3")
    assert encoder.delta(StreamDelta()) == b""
    assert encoder.delta(StreamDelta(text="")) == b""
