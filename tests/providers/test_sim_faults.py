"""Faults the simulated provider injects, as the real OpenAI and Anthropic clients see them.

Timing assertions are lower bounds only: a loaded machine may be slower, never faster.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anthropic
import httpx
import httpx2  # the transport under the anthropic client; its stream errors surface unwrapped
import openai
import pytest

from corral.providers.sim import FAULT_HEADER, Fault, FaultKind, SimProvider

CLAUDE = "claude-sim"
MESSAGES = [{"role": "user", "content": "Tell me about the weather in Paris this week."}]


def fault(spec: str) -> dict[str, str]:
    return {FAULT_HEADER: spec}


async def openai_chat(client: openai.AsyncOpenAI, spec: str, **kwargs: Any) -> Any:
    return await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_headers=fault(spec), **kwargs
    )


async def claude_chat(client: anthropic.AsyncAnthropic, spec: str, **kwargs: Any) -> Any:
    return await client.messages.create(
        model=CLAUDE, max_tokens=100, messages=MESSAGES, extra_headers=fault(spec), **kwargs
    )


async def drain(stream: Any) -> tuple[list[Any], BaseException | None]:
    """What a stream yielded before it ended, and the error that ended it, if any."""
    items: list[Any] = []
    try:
        async for item in stream:
            items.append(item)
    except Exception as exc:
        return items, exc
    return items, None


@pytest.mark.parametrize(
    ("spec", "retry_after"), [("429", "1"), ("rate_limit;retry_after=2.5", "2.5")]
)
@pytest.mark.parametrize("stream", [False, True])
async def test_rate_limit_is_a_429_with_retry_after(
    oai: openai.AsyncOpenAI,
    claude: anthropic.AsyncAnthropic,
    spec: str,
    retry_after: str,
    stream: bool,
) -> None:
    with pytest.raises(openai.RateLimitError) as openai_error:
        await openai_chat(oai, spec, stream=stream)
    with pytest.raises(anthropic.RateLimitError) as claude_error:
        await claude_chat(claude, spec, stream=stream)

    assert openai_error.value.response.headers["Retry-After"] == retry_after
    assert openai_error.value.code == "rate_limit_exceeded"
    assert openai_error.value.type == "rate_limit_exceeded"
    assert claude_error.value.response.headers["Retry-After"] == retry_after
    assert claude_error.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Rate limit reached (simulated)."},
    }


@pytest.mark.parametrize("spec", ["500", "error;status=502", "503"])
@pytest.mark.parametrize("stream", [False, True])
async def test_server_errors_keep_their_status(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic, spec: str, stream: bool
) -> None:
    status = Fault.parse(spec).status

    with pytest.raises(openai.InternalServerError) as openai_error:
        await openai_chat(oai, spec, stream=stream)
    with pytest.raises(anthropic.InternalServerError) as claude_error:
        await claude_chat(claude, spec, stream=stream)

    assert openai_error.value.status_code == claude_error.value.status_code == status
    assert openai_error.value.type == "server_error"
    assert isinstance(claude_error.value.body, dict)
    assert claude_error.value.body["error"]["type"] == "api_error"


async def test_anthropic_overloaded_is_529(claude: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.OverloadedError):
        await claude_chat(claude, "529")


@pytest.mark.parametrize("stream", [False, True])
async def test_reset_is_a_connection_error(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic, stream: bool
) -> None:
    with pytest.raises(openai.APIConnectionError):
        await openai_chat(oai, "reset", stream=stream)
    with pytest.raises(anthropic.APIConnectionError):
        await claude_chat(claude, "reset", stream=stream)


async def test_reset_sends_rst_not_fin(sim: SimProvider) -> None:
    body = b'{"model":"m","messages":[{"role":"user","content":"x"}]}'
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\nX-Sim-Fault: reset\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()

    with pytest.raises(ConnectionResetError):
        await reader.read()
    writer.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_hang_times_the_client_out(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic, stream: bool
) -> None:
    with pytest.raises(openai.APITimeoutError):
        await openai_chat(oai, "hang", stream=stream, timeout=0.3)
    with pytest.raises(anthropic.APITimeoutError):
        await claude_chat(claude, "hang", stream=stream, timeout=0.3)


async def test_hang_past_its_delay_closes_without_an_answer(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        await openai_chat(oai, "hang;delay=0.05")


async def test_stopping_wakes_a_hung_request_and_leaves_no_tasks() -> None:
    provider = await SimProvider(fault=Fault(FaultKind.HANG)).start()
    async with httpx.AsyncClient(base_url=provider.base_url, timeout=30) as http:
        body = {"model": "gpt-4o", "messages": MESSAGES}
        waiting = asyncio.create_task(http.post("/v1/chat/completions", json=body))
        async with asyncio.timeout(5):
            # The request counter is the only signal that the request has arrived.
            while not provider.requests:  # noqa: ASYNC110
                await asyncio.sleep(0.01)

        await provider.stop()

        with pytest.raises(httpx.RemoteProtocolError):
            await waiting
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.parametrize("stream", [False, True])
async def test_slow_first_byte_answers_after_the_delay(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic, stream: bool
) -> None:
    started = time.monotonic()
    openai_answer = await openai_chat(oai, "slow_first_byte;delay=0.2", stream=stream)
    openai_elapsed = time.monotonic() - started
    started = time.monotonic()
    claude_answer = await claude_chat(claude, "slow_first_byte;delay=0.2", stream=stream)
    claude_elapsed = time.monotonic() - started

    if stream:
        openai_chunks, openai_error = await drain(openai_answer)
        claude_events, claude_error = await drain(claude_answer)
        assert openai_error is claude_error is None
        assert openai_chunks[-1].choices[0].finish_reason == "stop"
        assert claude_events[-1].type == "message_stop"
    else:
        assert openai_answer.choices[0].message.content.startswith("Simulated reply")
        assert claude_answer.content[0].text.startswith("Simulated reply")
    assert openai_elapsed >= 0.2
    assert claude_elapsed >= 0.2


async def test_slow_stream_spaces_out_the_chunks(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    started = time.monotonic()
    chunks = [
        chunk async for chunk in await openai_chat(oai, "slow_stream;delay=0.02", stream=True)
    ]
    openai_elapsed = time.monotonic() - started
    events, error = await drain(await claude_chat(claude, "slow_stream;delay=0.02", stream=True))

    # Chunk k cannot leave before k pauses have passed. (Gaps between single chunks are not
    # asserted: a busy client may read two of them at once.)
    assert openai_elapsed >= 0.02 * (len(chunks) - 1)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert error is None
    assert events[-1].type == "message_stop"


async def test_slow_stream_delays_a_whole_reply(oai: openai.AsyncOpenAI) -> None:
    started = time.monotonic()
    completion = await openai_chat(oai, "slow_stream;delay=0.2")

    assert time.monotonic() - started >= 0.2
    assert completion.choices[0].finish_reason == "stop"


async def test_cut_stream_breaks_off_after_the_given_chunks(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    chunks, openai_error = await drain(
        await openai_chat(oai, "cut_stream;after_chunks=3", stream=True)
    )
    # Frames 1-3 of the Anthropic stream are message_start, content_block_start and a ping,
    # which the client skips.
    events, claude_error = await drain(
        await claude_chat(claude, "cut_stream;after_chunks=3", stream=True)
    )

    assert isinstance(openai_error, openai.APIConnectionError)
    assert len(chunks) == 3
    assert all(chunk.choices[0].finish_reason is None for chunk in chunks)
    assert isinstance(claude_error, anthropic.APIConnectionError | httpx2.RemoteProtocolError)
    assert [event.type for event in events] == ["message_start", "content_block_start"]


async def test_cut_whole_reply_is_a_short_read(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic, http: httpx.AsyncClient
) -> None:
    with pytest.raises(openai.APIConnectionError):
        await openai_chat(oai, "cut_stream")
    with pytest.raises(anthropic.APIConnectionError):
        await claude_chat(claude, "cut_stream")
    with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
        body = {"model": "gpt-4o", "messages": MESSAGES}
        await http.post("/v1/chat/completions", json=body, headers=fault("cut_stream"))


async def test_malformed_json_fails_to_parse(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic, http: httpx.AsyncClient
) -> None:
    body = {"model": "gpt-4o", "messages": MESSAGES}
    raw = await http.post("/v1/chat/completions", json=body, headers=fault("malformed_json"))

    assert raw.status_code == 200
    assert raw.headers["Content-Type"].startswith("application/json")
    assert raw.text.startswith('{"id":"chatcmpl-sim-')
    with pytest.raises(ValueError):
        await openai_chat(oai, "malformed_json")
    with pytest.raises(ValueError):
        await claude_chat(claude, "malformed_json")


async def test_malformed_stream_event_fails_to_parse(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    openai_chunks, openai_error = await drain(await openai_chat(oai, "malformed_json", stream=True))
    claude_events, claude_error = await drain(
        await claude_chat(claude, "malformed_json", stream=True)
    )

    assert openai_chunks == claude_events == []
    assert isinstance(openai_error, ValueError)
    assert isinstance(claude_error, ValueError)


async def test_wrong_shape_parses_into_an_empty_shell(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    # Neither client validates responses by default: the reply comes back with its fields
    # unset, which is what a caller has to notice.
    completion = await openai_chat(oai, "wrong_shape")
    message = await claude_chat(claude, "wrong_shape")
    chunks, openai_error = await drain(await openai_chat(oai, "wrong_shape", stream=True))
    events, claude_error = await drain(await claude_chat(claude, "wrong_shape", stream=True))

    assert completion.choices is None
    assert message.content is None
    assert openai_error is claude_error is None
    assert [chunk.choices for chunk in chunks] == [None]
    assert events[0].type is None
    assert events[0].message is None


async def test_wrong_shape_fails_a_strict_client(sim: SimProvider) -> None:
    async with openai.AsyncOpenAI(
        base_url=sim.openai_base_url, api_key="x", max_retries=0, _strict_response_validation=True
    ) as strict:
        with pytest.raises(openai.APIResponseValidationError):
            await openai_chat(strict, "wrong_shape")


async def test_bad_fault_header_is_a_400_that_says_why(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    with pytest.raises(openai.BadRequestError) as openai_error:
        await openai_chat(oai, "hang;status=500")
    with pytest.raises(anthropic.BadRequestError) as claude_error:
        await claude_chat(claude, "explode")

    assert "hang takes no 'status'" in openai_error.value.message
    assert isinstance(claude_error.value.body, dict)
    assert "unknown kind 'explode'" in claude_error.value.body["error"]["message"]


async def test_fault_precedence_header_then_model_then_provider(http: httpx.AsyncClient) -> None:
    async with SimProvider(
        faults={"flaky": Fault(FaultKind.ERROR, status=503)}, fault=Fault(FaultKind.RATE_LIMIT)
    ) as provider:
        url = provider.openai_base_url + "/chat/completions"

        async def status(model: str, headers: dict[str, str] | None = None) -> int:
            body = {"model": model, "messages": MESSAGES}
            return (await http.post(url, json=body, headers=headers)).status_code

        assert await status("flaky", fault("502")) == 502
        assert await status("flaky") == 503
        assert await status("steady") == 429

        provider.set_fault(None, None)
        assert await status("steady") == 200
        provider.set_fault("flaky", None)
        assert await status("flaky") == 200


async def error_pattern(seed: int) -> list[int]:
    """Statuses of 200 requests to a provider that fails a quarter of them."""
    async with (
        SimProvider(fault=Fault(FaultKind.ERROR, rate=0.25), seed=seed) as provider,
        httpx.AsyncClient(base_url=provider.base_url) as http,
    ):
        body = {"model": "gpt-4o", "messages": MESSAGES}
        return [
            (await http.post("/v1/chat/completions", json=body)).status_code for _ in range(200)
        ]


async def test_partial_fault_rate_is_reproducible_with_a_seed() -> None:
    first = await error_pattern(seed=7)
    again = await error_pattern(seed=7)
    other = await error_pattern(seed=8)

    assert set(first) == {200, 500}
    assert 30 <= first.count(500) <= 70
    assert first == again
    assert first != other


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("rate_limit", Fault(FaultKind.RATE_LIMIT)),
        ("429", Fault(FaultKind.RATE_LIMIT)),
        ("rate_limit;retry_after=2", Fault(FaultKind.RATE_LIMIT, retry_after=2.0)),
        ("429;rate=0.1", Fault(FaultKind.RATE_LIMIT, rate=0.1)),
        ("error", Fault(FaultKind.ERROR, status=500)),
        ("error;status=503", Fault(FaultKind.ERROR, status=503)),
        ("503", Fault(FaultKind.ERROR, status=503)),
        ("error;status=500;rate=0.25", Fault(FaultKind.ERROR, status=500, rate=0.25)),
        ("reset", Fault(FaultKind.RESET)),
        ("hang;delay=5", Fault(FaultKind.HANG, delay=5.0)),
        ("slow_first_byte;delay=0.5", Fault(FaultKind.SLOW_FIRST_BYTE, delay=0.5)),
        (" Slow_Stream ; DELAY = 0.5 ", Fault(FaultKind.SLOW_STREAM, delay=0.5)),
        ("cut_stream;after_chunks=3", Fault(FaultKind.CUT_STREAM, after_chunks=3)),
        ("malformed_json;rate=1", Fault(FaultKind.MALFORMED_JSON)),
        ("wrong_shape;rate=0", Fault(FaultKind.WRONG_SHAPE, rate=0.0)),
    ],
)
def test_fault_parse(spec: str, expected: Fault) -> None:
    assert Fault.parse(spec) == expected


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("", "unknown kind ''"),
        ("explode", "unknown kind 'explode'; expected one of rate_limit, error, reset"),
        ("404", "status 404 is not 429 or 500-599"),
        ("error;status=404", "status must be 500-599"),
        ("hang;status=500", "hang takes no 'status'; its options are delay, rate"),
        ("rate_limit;delay=1", "rate_limit takes no 'delay'; its options are retry_after, rate"),
        ("hang;delay", "option 'delay' is not key=value"),
        ("hang;delay=", "option 'delay=' is not key=value"),
        ("hang;delay=soon", "delay='soon' is not a number"),
        ("cut_stream;after_chunks=1.5", "after_chunks='1.5' is not an integer"),
        ("cut_stream;after_chunks=-1", "after_chunks must be >= 0"),
        ("error;rate=1.5", "rate must be between 0 and 1"),
        ("error;rate=nan", "rate must be between 0 and 1"),
        ("hang;delay=-1", "delay must be a finite number of seconds >= 0"),
        ("hang;delay=inf", "delay must be a finite number of seconds >= 0"),
        ("503;status=500", "'status' given twice"),
    ],
)
def test_fault_parse_rejects_bad_specs(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        Fault.parse(spec)

    assert fragment in str(info.value)
    assert repr(spec) in str(info.value)


def test_fault_defaults() -> None:
    assert Fault(FaultKind.HANG).wait == 3600.0
    assert Fault(FaultKind.HANG, delay=0.0).wait == 0.0
    assert Fault(FaultKind.RATE_LIMIT).retry_after == 1.0
    assert Fault(FaultKind.CUT_STREAM).after_chunks == 2
    with pytest.raises(ValueError, match="500-599"):
        Fault(FaultKind.ERROR, status=429)
