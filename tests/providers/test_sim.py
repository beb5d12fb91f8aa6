"""The simulated provider's replies, through the real OpenAI and Anthropic clients over HTTP."""

from __future__ import annotations

import json
import math
from typing import Any

import anthropic
import httpx
import openai
import pytest

from corral.providers.sim import (
    FAULT_HEADER,
    SCRIPT_HEADER,
    Fault,
    FaultKind,
    Script,
    SimProvider,
    SimReply,
    SimToolCall,
)

# Not a deprecated name: the anthropic client warns about those.
CLAUDE = "claude-sim"
ARGS = {"city": "Paris", "days": 3, "units": {"temp": "C"}}
AGENT = Script.of(
    SimReply("Let me look that up.", (SimToolCall("get_weather", ARGS),)),
    SimReply(tool_calls=(SimToolCall("get_time", {}), SimToolCall("get_weather", ARGS))),
    "It is sunny in Paris.",
)

Reply = tuple[str, list[tuple[str, Any]], tuple[int, int]]


def tokens(chars: int) -> int:
    return max(1, math.ceil(chars / 4))


async def openai_reply(client: openai.AsyncOpenAI, stream: bool, **kwargs: Any) -> Reply:
    """Text, (name, parsed args) per tool call, and (input, output) tokens of one completion."""
    if stream:
        options = {"include_usage": True}
        async with client.chat.completions.stream(**kwargs, stream_options=options) as events:
            completion: Any = await events.get_final_completion()
    else:
        completion = await client.chat.completions.create(**kwargs)
    message = completion.choices[0].message
    calls = [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]
    usage = completion.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    return message.content or "", calls, (usage.prompt_tokens, usage.completion_tokens)


async def anthropic_reply(client: anthropic.AsyncAnthropic, stream: bool, **kwargs: Any) -> Reply:
    kwargs.setdefault("max_tokens", 256)
    if stream:
        async with client.messages.stream(**kwargs) as events:
            message: Any = await events.get_final_message()
    else:
        message = await client.messages.create(**kwargs)
    text = "".join(block.text for block in message.content if block.type == "text")
    calls = [(block.name, block.input) for block in message.content if block.type == "tool_use"]
    return text, calls, (message.usage.input_tokens, message.usage.output_tokens)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_default_reply_echoes_the_last_user_message(
    oai: openai.AsyncOpenAI, stream: bool
) -> None:
    question = "What is the weather like in Paris this week? " * 3
    text, calls, usage = await openai_reply(oai, stream, model="gpt-4o", messages=user(question))

    assert text == f"Simulated reply from gpt-4o to: {question[:60]}"
    assert calls == []
    assert usage == (tokens(len(question)), tokens(len(text)))


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_default_reply_echoes_the_last_user_message(
    claude: anthropic.AsyncAnthropic, stream: bool
) -> None:
    text, calls, usage = await anthropic_reply(claude, stream, model=CLAUDE, messages=user("hi"))

    assert text == f"Simulated reply from {CLAUDE} to: hi"
    assert calls == []
    assert usage == (1, tokens(len(text)))


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_tool_calls_carry_the_scripted_arguments(
    sim: SimProvider, oai: openai.AsyncOpenAI, stream: bool
) -> None:
    sim.set_script("agent", AGENT)

    text, calls, usage = await openai_reply(oai, stream, model="agent", messages=user("weather?"))

    assert text == "Let me look that up."
    assert calls == [("get_weather", ARGS)]
    assert usage[1] == tokens(len(text) + len(json.dumps(ARGS, separators=(",", ":"))))


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_tool_use_carries_the_scripted_input(
    sim: SimProvider, claude: anthropic.AsyncAnthropic, stream: bool
) -> None:
    sim.set_script("agent", AGENT)

    text, calls, _ = await anthropic_reply(claude, stream, model="agent", messages=user("go"))

    assert text == "Let me look that up."
    assert calls == [("get_weather", ARGS)]


async def test_openai_tool_call_wire_shape(sim: SimProvider, oai: openai.AsyncOpenAI) -> None:
    sim.set_script("agent", AGENT)
    history = [
        *user("weather?"),
        {"role": "assistant", "content": "Let me look that up."},
        {"role": "tool", "tool_call_id": "x", "content": "18C"},
    ]

    completion = await oai.chat.completions.create(model="agent", messages=history)

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [call.type for call in calls] == ["function", "function"]
    assert len({call.id for call in calls}) == 2


async def test_openai_stream_arrives_in_pieces_with_a_usage_chunk(
    oai: openai.AsyncOpenAI,
) -> None:
    stream = await oai.chat.completions.create(
        model="gpt-4o",
        messages=user("tell me a story"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len(pieces) > 3
    assert "".join(pieces) == "Simulated reply from gpt-4o to: tell me a story"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None


async def test_openai_stream_has_no_usage_chunk_unless_asked(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(model="gpt-4o", messages=user("x"), stream=True)
    chunks = [chunk async for chunk in stream]

    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)


async def test_anthropic_stream_event_sequence(
    sim: SimProvider, claude: anthropic.AsyncAnthropic
) -> None:
    sim.set_script("agent", AGENT)

    stream = await claude.messages.create(
        model="agent", max_tokens=100, messages=user("go"), stream=True
    )
    kinds = [event.type async for event in stream]

    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 2
    assert kinds.count("content_block_delta") > 2


async def test_anthropic_stream_pings_after_the_first_block(http: httpx.AsyncClient) -> None:
    request = {"model": CLAUDE, "max_tokens": 10, "messages": user("x"), "stream": True}

    response = await http.post("/v1/messages", json=request)

    events = [line for line in response.text.splitlines() if line.startswith("event: ")]
    assert events[:3] == ["event: message_start", "event: content_block_start", "event: ping"]


@pytest.mark.parametrize("stream", [False, True])
async def test_scripted_usage_is_reported_as_given(
    sim: SimProvider,
    oai: openai.AsyncOpenAI,
    claude: anthropic.AsyncAnthropic,
    stream: bool,
) -> None:
    sim.set_script("metered", Script.of(SimReply("ok", input_tokens=1234, output_tokens=56)))

    openai_usage = (await openai_reply(oai, stream, model="metered", messages=user("x")))[2]
    claude_usage = (await anthropic_reply(claude, stream, model="metered", messages=user("x")))[2]

    assert openai_usage == claude_usage == (1234, 56)


async def test_estimated_input_counts_every_content_part(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    parts = [{"type": "text", "text": "abcd"}, {"type": "text", "text": "efgh"}]
    openai_messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": parts},
    ]
    claude_messages = [
        *user("abcd"),
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "xy"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "result"},
                {"type": "text", "text": "go"},
            ],
        },
    ]

    text, _, usage = await openai_reply(oai, False, model="gpt-4o", messages=openai_messages)
    _, _, claude_usage = await anthropic_reply(
        claude, False, model=CLAUDE, system="sys prompt!!", messages=claude_messages
    )

    assert text.endswith("to: abcdefgh")
    assert usage[0] == tokens(len("be brief" + "abcd" + "efgh"))
    assert claude_usage[0] == tokens(len("sys prompt!!" + "abcd" + "xy" + "result" + "go"))


def openai_history(assistant_turns: int) -> list[dict[str, Any]]:
    messages = user("weather in Paris?")
    for turn in range(assistant_turns):
        call = {"id": f"c{turn}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{turn}", "content": "18C"},
        ]
    return messages


def anthropic_history(assistant_turns: int) -> list[dict[str, Any]]:
    messages = user("weather in Paris?")
    for turn in range(assistant_turns):
        use = {"type": "tool_use", "id": f"t{turn}", "name": "f", "input": {}}
        result = {"type": "tool_result", "tool_use_id": f"t{turn}", "content": "18C"}
        messages += [
            {"role": "assistant", "content": [use]},
            {"role": "user", "content": [result]},
        ]
    return messages


@pytest.mark.parametrize(
    ("turns", "expected_tools", "expected_text"),
    [
        (0, ["get_weather"], "Let me look that up."),
        (1, ["get_time", "get_weather"], ""),
        (2, [], "It is sunny in Paris."),
        (7, [], "It is sunny in Paris."),  # past the end, the last reply repeats
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_reply_follows_the_number_of_assistant_turns(
    sim: SimProvider,
    oai: openai.AsyncOpenAI,
    claude: anthropic.AsyncAnthropic,
    turns: int,
    expected_tools: list[str],
    expected_text: str,
    stream: bool,
) -> None:
    sim.set_script("agent", AGENT)

    openai_text, openai_calls, _ = await openai_reply(
        oai, stream, model="agent", messages=openai_history(turns)
    )
    claude_text, claude_calls, _ = await anthropic_reply(
        claude, stream, model="agent", messages=anthropic_history(turns)
    )

    assert openai_text == claude_text == expected_text
    assert [name for name, _ in openai_calls] == expected_tools
    assert [name for name, _ in claude_calls] == expected_tools


@pytest.mark.parametrize("stream", [False, True])
async def test_header_selects_a_registered_script_over_the_model(
    sim: SimProvider, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic, stream: bool
) -> None:
    sim.set_script("gpt-4o", Script.of("by model"))
    sim.set_script("refusal", Script.of("I cannot help with that."))
    headers = {SCRIPT_HEADER: "refusal"}

    openai_text, _, _ = await openai_reply(
        oai, stream, model="gpt-4o", messages=user("x"), extra_headers=headers
    )
    claude_text, _, _ = await anthropic_reply(
        claude, stream, model=CLAUDE, messages=user("x"), extra_headers=headers
    )

    assert openai_text == claude_text == "I cannot help with that."


@pytest.mark.parametrize("stream", [False, True])
async def test_header_carries_an_inline_script(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic, stream: bool
) -> None:
    inline = {
        "text": "inline",
        "tool_calls": [{"name": "lookup", "arguments": {"id": 7}}],
        "input_tokens": 11,
        "output_tokens": 22,
    }
    headers = {SCRIPT_HEADER: json.dumps(inline)}

    openai_answer = await openai_reply(
        oai, stream, model="gpt-4o", messages=user("x"), extra_headers=headers
    )
    claude_answer = await anthropic_reply(
        claude, stream, model=CLAUDE, messages=user("x"), extra_headers=headers
    )

    assert openai_answer == claude_answer == ("inline", [("lookup", {"id": 7})], (11, 22))


async def test_malformed_tool_arguments_are_sent_verbatim(
    sim: SimProvider, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    broken = '{"city": "Par'
    sim.set_script("broken", Script.of(SimReply(tool_calls=(SimToolCall("f", broken),))))

    completion = await oai.chat.completions.create(model="broken", messages=user("x"))
    message = await claude.messages.create(model="broken", max_tokens=10, messages=user("x"))

    calls = completion.choices[0].message.tool_calls or []
    assert calls[0].function.arguments == broken  # type: ignore[union-attr]
    # Anthropic's wire carries an object, so the broken text goes in as a string.
    assert message.content[0].input == broken  # type: ignore[union-attr]


async def test_models_lists_defaults_and_scripted_models(
    sim: SimProvider, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    sim.set_script("agent", AGENT)
    sim.set_fault("flaky", Fault(FaultKind.ERROR))

    openai_ids = [model.id async for model in oai.models.list()]
    claude_ids = [model.id async for model in claude.models.list()]

    assert openai_ids == claude_ids
    assert {"gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "agent", "flaky"} <= set(openai_ids)
    assert {model.owned_by async for model in oai.models.list()} == {"corral-sim"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "gpt-4o", "messages": [', None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "gpt-4o"}', "messages"),
        (b'{"model": "gpt-4o", "messages": []}', "messages"),
    ],
)
async def test_bad_requests_get_400_in_each_api_shape(
    http: httpx.AsyncClient, body: bytes, param: str | None
) -> None:
    headers = {"Content-Type": "application/json"}

    openai_response = await http.post("/v1/chat/completions", content=body, headers=headers)
    claude_response = await http.post("/v1/messages", content=body, headers=headers)

    assert openai_response.status_code == claude_response.status_code == 400
    error = openai_response.json()["error"]
    assert error.keys() == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    claude_error = claude_response.json()
    assert claude_error["type"] == "error"
    assert claude_error["error"]["type"] == "invalid_request_error"
    assert claude_error["error"]["message"]


async def test_bad_request_surfaces_as_the_client_error(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await oai.chat.completions.create(model="gpt-4o", messages=[])

    assert "messages" in info.value.message


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("no-such-script", "names no registered script: 'no-such-script'"),
        ('{"text": 5}', "'text' must be a string"),
        ('{"txt": "typo"}', "unknown reply keys ['txt']"),
        ('{"text": "x"', "bad X-Sim-Script header"),
        ("[]", "at least one reply"),
    ],
)
async def test_bad_script_header_is_a_400_that_says_why(
    http: httpx.AsyncClient, header: str, fragment: str
) -> None:
    body = {"model": "gpt-4o", "messages": user("x")}

    response = await http.post("/v1/chat/completions", json=body, headers={SCRIPT_HEADER: header})

    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


async def test_unknown_route_is_404(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/embeddings")

    assert response.status_code == 404
    assert "no route for GET /v1/embeddings" in response.json()["error"]["message"]


async def test_requests_are_counted_by_path_and_model(
    sim: SimProvider, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    await oai.chat.completions.create(model="gpt-4o", messages=user("x"))
    await oai.chat.completions.create(model="gpt-4o", messages=user("x"))
    await claude.messages.create(model=CLAUDE, max_tokens=5, messages=user("x"))
    with pytest.raises(openai.RateLimitError):
        await oai.chat.completions.create(
            model="gpt-4o-mini", messages=user("x"), extra_headers={FAULT_HEADER: "429"}
        )

    assert sim.requests == {
        "/v1/chat/completions gpt-4o": 2,
        f"/v1/messages {CLAUDE}": 1,
        "/v1/chat/completions gpt-4o-mini": 1,
    }


async def test_long_prompts_are_accepted(oai: openai.AsyncOpenAI) -> None:
    prompt = "x" * 3_000_000  # past aiohttp's default 1 MiB body limit

    _, _, usage = await openai_reply(oai, False, model="gpt-4o", messages=user(prompt))

    assert usage[0] == 750_000


async def test_base_url_needs_a_running_provider() -> None:
    provider = SimProvider()

    with pytest.raises(RuntimeError, match="not running"):
        _ = provider.base_url
    async with provider:
        assert provider.base_url == f"http://127.0.0.1:{provider.port}"
        assert provider.openai_base_url == provider.base_url + "/v1"
        with pytest.raises(RuntimeError, match="already running"):
            await provider.start()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"text": "hi"}, Script.of("hi")),
        (
            [{"tool_calls": [{"name": "f"}]}, {"text": "done", "output_tokens": 3}],
            Script.of(SimReply(tool_calls=(SimToolCall("f"),)), SimReply("done", output_tokens=3)),
        ),
        (
            {"tool_calls": [{"name": "f", "arguments": "{oops"}]},
            Script.of(SimReply(tool_calls=(SimToolCall("f", "{oops"),))),
        ),
    ],
)
def test_script_from_json(data: Any, expected: Script) -> None:
    assert Script.from_json(data) == expected


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("hi", "must be a JSON object"),
        ({"tool_calls": {}}, "'tool_calls' must be an array"),
        ({"tool_calls": [{"arguments": {}}]}, "tool_calls[0] must be an object with a string"),
        ({"tool_calls": [{"name": "f", "arguments": 3}]}, "tool_calls[0].arguments"),
        ({"input_tokens": -1}, "'input_tokens' must be an integer >= 0"),
        ({"output_tokens": True}, "'output_tokens' must be an integer >= 0"),
    ],
)
def test_script_from_json_rejects_bad_replies(data: Any, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        Script.from_json(data)

    assert fragment in str(info.value)
