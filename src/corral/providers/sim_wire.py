"""Wire formats of the simulated provider: OpenAI Chat Completions and Anthropic Messages.

Everything here turns an already decided answer into bytes: response bodies, whole SSE frames
and error bodies. The server logic in `sim.py` is the same for both APIs and picks a `Wire`.
Shapes follow what the official `openai` and `anthropic` client libraries parse.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

# Streams are cut into word-sized text pieces and short argument fragments, so clients have to
# reassemble them the way they do with a real model.
_WORD_START = re.compile(r"(?<=\s)(?=\S)")
_FRAGMENT = 16
# A fixed date keeps /v1/models byte-identical across runs.
_MODELS_CREATED = 1_700_000_000
_MODELS_CREATED_AT = "2023-11-14T22:13:20Z"

WRONG_SHAPE_BODY = b'{"result":"ok"}'


class BadRequest(Exception):
    """A request the API would refuse with 400; `param` names the offending field, if one."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class RenderedCall:
    """A tool call ready to send: `arguments` is the JSON text, `input` the object form."""

    name: str
    arguments: str
    # Anthropic carries an object; when the scripted arguments are not a JSON object (a test
    # of malformed output) the raw text goes there instead.
    input: Any


@dataclass(frozen=True, slots=True)
class Answer:
    """One reply decided for one request, with its sequence number and usage fixed."""

    seq: int
    created: int
    model: str
    text: str
    tool_calls: tuple[RenderedCall, ...]
    input_tokens: int
    output_tokens: int


def check_request(body: Any) -> tuple[str, list[Any]]:
    """Returns the model and messages of a chat request, or raises BadRequest."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty array", "messages")
    return model, messages


def _texts(content: Any) -> Iterator[str]:
    """The text inside a message content: a string, or parts/blocks incl. tool results."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            text = part.get("text")
            if isinstance(text, str):
                yield text
            elif part.get("type") == "tool_result":
                yield from _texts(part.get("content"))


def prompt_chars(body: Mapping[str, Any]) -> int:
    """Characters of text in all messages plus Anthropic's top-level `system`."""
    total = sum(len(text) for text in _texts(body.get("system")))
    for message in body["messages"]:
        if isinstance(message, dict):
            total += sum(len(text) for text in _texts(message.get("content")))
    return total


def last_user_text(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return "".join(_texts(message.get("content")))
    return ""


def assistant_turns(messages: Sequence[Any]) -> int:
    return sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")


def _text_pieces(text: str) -> list[str]:
    return _WORD_START.split(text) if text else []


def _fragments(arguments: str) -> list[str]:
    return [arguments[i : i + _FRAGMENT] for i in range(0, len(arguments), _FRAGMENT)]


def models_body(names: Iterable[str]) -> bytes:
    """A model list both clients accept: OpenAI's list shape plus Anthropic's page fields."""
    data = [
        {
            "id": name,
            "object": "model",
            "created": _MODELS_CREATED,
            "owned_by": "corral-sim",
            "type": "model",
            "display_name": name,
            "created_at": _MODELS_CREATED_AT,
            "lifecycle": "active",
        }
        for name in names
    ]
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


class Wire(ABC):
    """One API's shapes. Bodies are bytes ready to send; frames are whole SSE events."""

    malformed_frames: tuple[bytes, ...]
    wrong_shape_frames: tuple[bytes, ...]

    @abstractmethod
    def error(self, status: int, message: str, param: str | None = None) -> bytes: ...

    @abstractmethod
    def body(self, answer: Answer) -> bytes: ...

    @abstractmethod
    def frames(self, answer: Answer, request: Mapping[str, Any]) -> list[bytes]: ...


class OpenAIWire(Wire):
    malformed_frames = (b'data: {"id": \n\n', b"data: [DONE]\n\n")
    wrong_shape_frames = (b"data: " + WRONG_SHAPE_BODY + b"\n\n", b"data: [DONE]\n\n")

    def error(self, status: int, message: str, param: str | None = None) -> bytes:
        code: str | None = None
        if status == 429:
            kind = code = "rate_limit_exceeded"
        elif status >= 500:
            kind = "server_error"
        else:
            kind = "invalid_request_error"
        return orjson.dumps(
            {"error": {"message": message, "type": kind, "param": param, "code": code}}
        )

    def body(self, answer: Answer) -> bytes:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": answer.text if answer.text or not answer.tool_calls else None,
            "refusal": None,
        }
        if answer.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_sim_{answer.seq}_{i}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for i, call in enumerate(answer.tool_calls)
            ]
        return orjson.dumps(
            {
                "id": f"chatcmpl-sim-{answer.seq}",
                "object": "chat.completion",
                "created": answer.created,
                "model": answer.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "tool_calls" if answer.tool_calls else "stop",
                    }
                ],
                "usage": _openai_usage(answer),
            }
        )

    def frames(self, answer: Answer, request: Mapping[str, Any]) -> list[bytes]:
        head = {
            "id": f"chatcmpl-sim-{answer.seq}",
            "object": "chat.completion.chunk",
            "created": answer.created,
            "model": answer.model,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

        frames = [chunk({"role": "assistant", "content": ""})]
        frames += [chunk({"content": piece}) for piece in _text_pieces(answer.text)]
        for i, call in enumerate(answer.tool_calls):
            opening = {
                "index": i,
                "id": f"call_sim_{answer.seq}_{i}",
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            frames.append(chunk({"tool_calls": [opening]}))
            frames += [
                chunk({"tool_calls": [{"index": i, "function": {"arguments": fragment}}]})
                for fragment in _fragments(call.arguments)
            ]
        frames.append(chunk({}, "tool_calls" if answer.tool_calls else "stop"))
        options = request.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            usage = {**head, "choices": [], "usage": _openai_usage(answer)}
            frames.append(b"data: " + orjson.dumps(usage) + b"\n\n")
        frames.append(b"data: [DONE]\n\n")
        return frames


def _openai_usage(answer: Answer) -> dict[str, int]:
    return {
        "prompt_tokens": answer.input_tokens,
        "completion_tokens": answer.output_tokens,
        "total_tokens": answer.input_tokens + answer.output_tokens,
    }


def _event(name: str, data: Mapping[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_PING = _event("ping", {"type": "ping"})
_MESSAGE_STOP = _event("message_stop", {"type": "message_stop"})


class AnthropicWire(Wire):
    malformed_frames = (b'event: message_start\ndata: {"id": \n\n', _MESSAGE_STOP)
    wrong_shape_frames = (
        b"event: message_start\ndata: " + WRONG_SHAPE_BODY + b"\n\n",
        _MESSAGE_STOP,
    )

    def error(self, status: int, message: str, param: str | None = None) -> bytes:
        kind = _ANTHROPIC_ERRORS.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})

    def body(self, answer: Answer) -> bytes:
        content: list[dict[str, Any]] = []
        if answer.text or not answer.tool_calls:
            content.append({"type": "text", "text": answer.text})
        content += [
            {
                "type": "tool_use",
                "id": f"toolu_sim_{answer.seq}_{i}",
                "name": c.name,
                "input": c.input,
            }
            for i, c in enumerate(answer.tool_calls)
        ]
        return orjson.dumps(
            {
                **_message_head(answer),
                "content": content,
                "stop_reason": "tool_use" if answer.tool_calls else "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": answer.input_tokens,
                    "output_tokens": answer.output_tokens,
                },
            }
        )

    def frames(self, answer: Answer, request: Mapping[str, Any]) -> list[bytes]:
        start = {
            **_message_head(answer),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # As the real API does: output so far is one token, the total comes in message_delta.
            "usage": {"input_tokens": answer.input_tokens, "output_tokens": 1},
        }
        frames = [_event("message_start", {"type": "message_start", "message": start})]
        index = 0
        if answer.text or not answer.tool_calls:
            frames.append(_block_start(0, {"type": "text", "text": ""}))
            frames += [
                _block_delta(0, {"type": "text_delta", "text": piece})
                for piece in _text_pieces(answer.text)
            ]
            frames.append(_block_stop(0))
            index = 1
        for i, call in enumerate(answer.tool_calls, start=index):
            block = {"type": "tool_use", "id": f"toolu_sim_{answer.seq}_{i - index}"}
            frames.append(_block_start(i, {**block, "name": call.name, "input": {}}))
            frames += [
                _block_delta(i, {"type": "input_json_delta", "partial_json": fragment})
                for fragment in _fragments(call.arguments)
            ]
            frames.append(_block_stop(i))
        # The real API pings right after the first content_block_start.
        frames.insert(2, _PING)
        stop_reason = "tool_use" if answer.tool_calls else "end_turn"
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": answer.output_tokens},
        }
        frames += [_event("message_delta", delta), _MESSAGE_STOP]
        return frames


def _message_head(answer: Answer) -> dict[str, Any]:
    return {
        "id": f"msg_sim_{answer.seq}",
        "type": "message",
        "role": "assistant",
        "model": answer.model,
    }


def _block_start(index: int, block: Mapping[str, Any]) -> bytes:
    return _event(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def _block_delta(index: int, delta: Mapping[str, Any]) -> bytes:
    return _event(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    )


def _block_stop(index: int) -> bytes:
    return _event("content_block_stop", {"type": "content_block_stop", "index": index})


OPENAI = OpenAIWire()
ANTHROPIC = AnthropicWire()
