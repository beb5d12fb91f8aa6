"""The canonical <-> Anthropic Messages mapping: round trips both ways, the parameters, the
errors that name their field, and what the Anthropic adapter now sends upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from corral.calls import LLMCall
from corral.policy import Model
from corral.providers.anthropic import AnthropicAdapter
from corral.providers.anthropic_format import (
    ANTHROPIC_FIELDS,
    FormatError,
    from_anthropic,
    to_anthropic,
)
from corral.providers.base import FailureKind, ProviderError
from corral.providers.http import HttpClient
from corral.providers.params import FORWARDED, FieldError

PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The forecast for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ANTHROPIC_WEATHER = {
    "name": "weather",
    "description": "The forecast for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# --- canonical -> Anthropic -> canonical -----------------------------------------------------

TEXT = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "Sunny."},
    {"role": "user", "content": "And Lyon?"},
]
IMAGES = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ],
    }
]
TOOLS = [
    {"role": "user", "content": "Weather in Paris and Lyon?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            call("call_1", "weather", '{"city":"Paris"}'),
            call("call_2", "weather", '{"city":"Lyon"}'),
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
    {"role": "assistant", "content": "Paris is sunny, Lyon rainy."},
]
TOOLS_WITH_TEXT = [
    {"role": "user", "content": "Weather?"},
    {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [call("toolu_01", "weather", '{"city":"Paris"}')],
    },
    {"role": "tool", "tool_call_id": "toolu_01", "content": "sunny"},
    {"role": "user", "content": [{"type": "text", "text": "Thanks. Tomorrow?"}]},
]


@pytest.mark.parametrize(
    "messages",
    [TEXT, IMAGES, TOOLS, TOOLS_WITH_TEXT],
    ids=["text", "images", "tool calls and results", "tool call beside text"],
)
def test_canonical_round_trip(messages: list[dict[str, Any]]) -> None:
    system, turns, params = to_anthropic(messages, {"tools": [WEATHER]})
    back, back_params = from_anthropic(system, turns, params)
    assert back == messages
    assert back_params == {"tools": [WEATHER]}


def test_text_maps_to_a_system_string_and_alternating_turns() -> None:
    system, turns, _ = to_anthropic(TEXT, {})
    assert system == "Be terse."
    assert turns == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Sunny."},
        {"role": "user", "content": "And Lyon?"},
    ]


def test_images_become_base64_and_url_sources() -> None:
    _, turns, _ = to_anthropic(IMAGES, {})
    assert turns[0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_tool_calls_become_tool_use_and_results_one_user_turn() -> None:
    _, turns, _ = to_anthropic(TOOLS, {})
    assert [turn["role"] for turn in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Lyon"}},
    ]
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "rain"},
    ]


def test_consecutive_turns_of_one_role_are_merged() -> None:
    messages = [
        {"role": "system", "content": "A."},
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "system", "content": "B."},
        {"role": "assistant", "content": "three"},
        {"role": "assistant", "content": "", "tool_calls": [call("c1", "clock", "")]},
        {"role": "tool", "tool_call_id": "c1", "content": "noon"},
        {"role": "user", "content": "four"},
    ]
    system, turns, _ = to_anthropic(messages, {})
    assert system == "A.\n\nB."
    assert turns == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "three"},
                # empty arguments text: a tool without parameters
                {"type": "tool_use", "id": "c1", "name": "clock", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "noon"},
                {"type": "text", "text": "four"},
            ],
        },
    ]


def test_system_parts_and_developer_role_make_text_blocks() -> None:
    messages = [
        {"role": "developer", "content": "Rules."},
        {"role": "system", "content": [{"type": "text", "text": "More rules."}]},
        {"role": "user", "content": "hi"},
    ]
    system, _, _ = to_anthropic(messages, {})
    assert system == [{"type": "text", "text": "Rules."}, {"type": "text", "text": "More rules."}]


def test_tool_ids_keep_to_the_characters_anthropic_accepts() -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call("fn.clock:0", "clock", "{}")]},
        {"role": "tool", "tool_call_id": "fn.clock:0", "content": "noon"},
    ]
    _, turns, _ = to_anthropic(messages, {})
    assert turns[1]["content"][0]["id"] == turns[2]["content"][0]["tool_use_id"] == "fn_clock_0"


# --- Anthropic -> canonical -> Anthropic -----------------------------------------------------

ANTHROPIC_TURNS = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
        ],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "text", "text": "And this picture?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        ],
    },
]


@pytest.mark.parametrize(
    "system",
    ["Be terse.", [{"type": "text", "text": "Be"}, {"type": "text", "text": " terse."}], None],
    ids=["string", "blocks", "none"],
)
def test_anthropic_round_trip(system: Any) -> None:
    params = {
        "tools": [ANTHROPIC_WEATHER],
        "tool_choice": {"type": "tool", "name": "weather"},
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "top_k": 5,
    }
    messages, canonical_params = from_anthropic(system, ANTHROPIC_TURNS, params)
    assert to_anthropic(messages, canonical_params) == (system, ANTHROPIC_TURNS, params)


def test_anthropic_request_in_canonical_shape() -> None:
    messages, params = from_anthropic(
        "Be terse.",
        ANTHROPIC_TURNS,
        {
            "tools": [ANTHROPIC_WEATHER],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "stop_sequences": ["END"],
            "top_k": 5,
            "metadata": {"user_id": "u-1"},
            "thinking": {"type": "enabled", "budget_tokens": 1024},
        },
    )
    assert messages == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [call("toolu_1", "weather", '{"city":"Paris"}')],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this picture?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        },
    ]
    assert params == {
        "tools": [WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "stop": ["END"],
        "top_k": 5,
    }


def test_tool_results_come_before_the_rest_of_their_turn() -> None:
    turns = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "clock", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "here:"},
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "is_error": True,
                    "content": [
                        {"type": "text", "text": "clock down"},
                        {"type": "text", "text": "try later"},
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/e.png"}},
                    ],
                },
            ],
        },
    ]
    messages, _ = from_anthropic(None, turns, {})
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [call("t1", "clock", "{}")],
    }
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "t1", "content": "clock down\ntry later"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "here:"},
                # An OpenAI tool message holds no image: it follows in the user message.
                {"type": "image_url", "image_url": {"url": "https://x.test/e.png"}},
            ],
        },
    ]


def test_thinking_blocks_of_earlier_turns_are_left_out() -> None:
    turns = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "redacted_thinking", "data": "xyz"},
                {"type": "text", "text": "hello"},
            ],
        },
    ]
    messages, _ = from_anthropic(None, turns, {})
    assert messages[1] == {"role": "assistant", "content": "hello"}


@pytest.mark.parametrize(
    ("canonical", "anthropic"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        (
            {"type": "function", "function": {"name": "weather"}},
            {"type": "tool", "name": "weather"},
        ),
    ],
)
def test_tool_choice_both_ways(canonical: Any, anthropic: dict[str, Any]) -> None:
    _, _, params = to_anthropic([], {"tools": [WEATHER], "tool_choice": canonical})
    assert params["tool_choice"] == anthropic
    assert from_anthropic(None, [], params)[1]["tool_choice"] == canonical


# --- parameters ------------------------------------------------------------------------------


def test_openai_parameters_in_anthropic_terms() -> None:
    _, _, params = to_anthropic(
        [],
        {
            "tools": [{"type": "function", "function": {"name": "clock"}}],
            "parallel_tool_calls": False,
            "stop": "END",
            "temperature": 0.3,
            "top_p": 0.9,
            "top_k": 4,
            "service_tier": "default",
            # OpenAI's alone: left out, as Anthropic refuses fields it does not know.
            "response_format": {"type": "json_object"},
            "seed": 7,
            "user": "u-1",
            "presence_penalty": 0.1,
            "frequency_penalty": 0.1,
            "logprobs": False,
            "reasoning_effort": "low",
        },
    )
    assert params == {
        "tools": [{"name": "clock", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "stop_sequences": ["END"],
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 4,
        "service_tier": "standard_only",
    }


def test_every_forwarded_field_has_an_anthropic_form_or_is_left_out() -> None:
    valid = {"tools": [WEATHER], "tool_choice": "auto", "stop": ["END"], "service_tier": "flex"}
    fields = {field: valid.get(field, 1) for field in FORWARDED}
    _, _, params = to_anthropic([USER], fields)
    assert set(params) <= ANTHROPIC_FIELDS
    assert params["service_tier"] == "standard_only"  # no flex at Anthropic: never dearer


@pytest.mark.parametrize(("tier", "canonical"), [("auto", "auto"), ("standard_only", "default")])
def test_service_tier_both_ways(tier: str, canonical: str) -> None:
    assert from_anthropic(None, [USER], {"service_tier": tier})[1] == {"service_tier": canonical}
    assert to_anthropic([USER], {"service_tier": canonical})[2] == {"service_tier": tier}


def test_from_anthropic_leaves_output_limits_and_multipliers_to_split() -> None:
    fields = {"max_tokens": 5, "max_completion_tokens": 9, "n": None, "metadata": {"user_id": "u"}}
    assert from_anthropic(None, [USER], fields)[1] == {"max_tokens": 5, "max_completion_tokens": 9}


@pytest.mark.parametrize(
    ("field", "words"),
    [
        ("stop", "unknown field"),  # OpenAI's name: Anthropic's is stop_sequences
        ("speed", "premium"),
        ("mcp_servers", "server-side tools"),
    ],
)
def test_from_anthropic_refuses_fields_it_does_not_forward(field: str, words: str) -> None:
    with pytest.raises(FieldError) as raised:
        from_anthropic(None, [USER], {field: "x"})
    assert raised.value.where == field
    assert str(raised.value).startswith(f"{field}: ") and words in str(raised.value)


def test_parallel_tool_calls_without_tools_or_with_choice_none_says_nothing() -> None:
    assert to_anthropic([], {"parallel_tool_calls": False})[2] == {}
    none = to_anthropic(
        [], {"tools": [WEATHER], "tool_choice": "none", "parallel_tool_calls": False}
    )
    assert none[2]["tool_choice"] == {"type": "none"}
    forced = to_anthropic(
        [], {"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False}
    )
    assert forced[2]["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


# --- errors name their field -----------------------------------------------------------------

USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("messages", "params", "where", "words"),
    [
        (
            [
                USER,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [call("call_9", "f", "{oops")],
                },
            ],
            {},
            "messages[1].tool_calls[0].function.arguments",
            "'call_9'",
        ),
        (
            [USER, {"role": "assistant", "tool_calls": [call("call_8", "f", "[1, 2]")]}],
            {},
            "messages[1].tool_calls[0].function.arguments",
            "'call_8'",
        ),
        ([{"role": "bot", "content": "x"}], {}, "messages[0].role", "'bot'"),
        ([{"role": ["user"], "content": "x"}], {}, "messages[0].role", "['user']"),
        ([USER, {"role": "tool", "content": "x"}], {}, "messages[1].tool_call_id", "string"),
        ([{"role": "user", "content": 5}], {}, "messages[0].content", "number"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}],
            {},
            "messages[0].content[0].image_url.url",
            "URL",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": "data:image/png,xx"}],
                }
            ],
            {},
            "messages[0].content[0].image_url.url",
            "base64",
        ),
        (
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
            {},
            "messages[0].content[0]",
            "'input_audio'",
        ),
        (
            [USER],
            {"tools": [{"type": "custom", "custom": {"name": "x"}}]},
            "tools[0].type",
            "function",
        ),
        (
            [USER],
            {"tools": [{"type": "function", "function": {}}]},
            "tools[0].function.name",
            "string",
        ),
        ([USER], {"tool_choice": "sometimes"}, "tool_choice", "'auto'"),
        ([USER], {"stop": 5}, "stop", "string"),
    ],
    ids=[
        "arguments not JSON",
        "arguments not an object",
        "unknown role",
        "role not a string",
        "tool result without id",
        "content a number",
        "image URL scheme",
        "data URL not base64",
        "audio part",
        "non-function tool",
        "tool without name",
        "tool choice",
        "stop",
    ],
)
def test_to_anthropic_errors_name_the_field(
    messages: list[Any], params: dict[str, Any], where: str, words: str
) -> None:
    with pytest.raises(FormatError) as raised:
        to_anthropic(messages, params)
    assert raised.value.where == where
    assert str(raised.value).startswith(f"{where}: ")
    assert words in str(raised.value)


@pytest.mark.parametrize(
    ("system", "messages", "params", "where", "words"),
    [
        (
            None,
            [
                USER,
                {"role": "assistant", "content": "x"},
                {"role": "user", "content": [{"type": "foo"}]},
            ],
            {},
            "messages[2].content[0]",
            "unknown block type 'foo'",
        ),
        (None, [{"role": "system", "content": "x"}], {}, "messages[0].role", "'system'"),
        (None, [{"role": "user"}], {}, "messages[0].content", "null"),
        (None, [{"role": "user", "content": ["hi"]}], {}, "messages[0].content[0]", "string"),
        (
            None,
            [{"role": "user", "content": [{"type": "document", "source": {}}]}],
            {},
            "messages[0].content[0]",
            "'document'",
        ),
        (
            None,
            [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}],
            {},
            "messages[0].content[0].tool_use_id",
            "string",
        ),
        (
            None,
            [
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": []}],
                }
            ],
            {},
            "messages[0].content[0].input",
            "array",
        ),
        (
            None,
            [
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                }
            ],
            {},
            "messages[0].content[0].source.type",
            "'file'",
        ),
        ([{"type": "image"}], [USER], {}, "system[0].type", "text"),
        (5, [USER], {}, "system", "number"),
        (None, "hi", {}, "messages", "string"),
        (None, [USER], {"tools": [{"name": "t"}]}, "tools[0].input_schema", "null"),
        (
            None,
            [USER],
            {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            "tools[0].type",
            "'web_search_20250305'",
        ),
        (None, [USER], {"tool_choice": {"type": "tool"}}, "tool_choice.name", "string"),
        (None, [USER], {"tool_choice": {"type": "some"}}, "tool_choice.type", "'some'"),
        (None, [USER], {"stop_sequences": "END"}, "stop_sequences", "array"),
    ],
    ids=[
        "unknown block",
        "system role in messages",
        "no content",
        "bare string block",
        "document block",
        "tool result without id",
        "tool input not an object",
        "image source kind",
        "system image",
        "system number",
        "messages string",
        "tool without schema",
        "server tool",
        "tool choice without name",
        "tool choice type",
        "stop sequences string",
    ],
)
def test_from_anthropic_errors_name_the_field(
    system: Any, messages: Any, params: dict[str, Any], where: str, words: str
) -> None:
    with pytest.raises(FormatError) as raised:
        from_anthropic(system, messages, params)
    assert raised.value.where == where
    assert isinstance(raised.value, ValueError)
    assert str(raised.value).startswith(f"{where}: ")
    assert words in str(raised.value)


# --- the adapter sends tool calls in Anthropic's shape ---------------------------------------

ANSWER = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [{"type": "text", "text": "Paris is sunny."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 4},
}


class Upstream:
    """Records each request body and answers ANSWER."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        return web.json_response(ANSWER)


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    server = Upstream()
    app = web.Application()
    app.router.add_post("/v1/messages", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield server, f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def adapter(upstream: tuple[Upstream, str]) -> AsyncIterator[AnthropicAdapter]:
    client = HttpClient()
    yield AnthropicAdapter(client, upstream[1], "test-key", 5.0)
    await client.close()


MODEL = Model(provider="an", model="claude-x", context_window=200_000, max_output_tokens=300)


async def test_adapter_sends_tool_calls_and_results_in_anthropic_shape(
    adapter: AnthropicAdapter, upstream: tuple[Upstream, str]
) -> None:
    messages = [{"role": "system", "content": "Be terse."}, *TOOLS[:4]]
    params = {"tools": [WEATHER], "tool_choice": "auto", "stop": ["END"], "seed": 3}
    result = await adapter.complete("claude", MODEL, LLMCall("claude", messages, params))
    assert result.text == "Paris is sunny."
    (body,) = upstream[0].bodies
    assert body["system"] == "Be terse."
    assert body["max_tokens"] == 300
    assert body["messages"] == to_anthropic(TOOLS[:4], {})[1]
    assert body["messages"][1]["content"][0]["type"] == "tool_use"
    assert body["messages"][2]["content"][0]["type"] == "tool_result"
    assert body["tools"] == [ANTHROPIC_WEATHER]
    assert body["tool_choice"] == {"type": "auto"}
    assert body["stop_sequences"] == ["END"]
    assert "seed" not in body and "stop" not in body


async def test_adapter_refuses_a_request_with_no_anthropic_form_as_a_bad_request(
    adapter: AnthropicAdapter, upstream: tuple[Upstream, str]
) -> None:
    messages = [USER, {"role": "assistant", "tool_calls": [call("call_7", "f", "{not json")]}]
    with pytest.raises(ProviderError) as raised:
        await adapter.complete("claude", MODEL, LLMCall("claude", messages))
    assert raised.value.kind is FailureKind.BAD_REQUEST  # not retried, no fallback
    assert "call_7" in raised.value.message
    assert upstream[0].bodies == []
