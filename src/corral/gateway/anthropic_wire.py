"""The Anthropic Messages door: `POST /v1/messages` requests, answers and stream events.

Requests are checked at the top level here and mapped to the canonical shape by
`anthropic_format.from_anthropic`, which names any malformed or unknown field it meets;
their fields then meet `params.split` as the OpenAI door's do. Answers are written back in
Anthropic's shape, whichever provider gave them.
"""

from __future__ import annotations

from typing import Any

import orjson

from corral.calls import LLMResult, StreamDelta, ToolCallRequest, Usage
from corral.gateway.openai_wire import invalid, model_and_messages, refused
from corral.gateway.wire import ChatRequest
from corral.providers.anthropic_format import from_anthropic
from corral.providers.params import FieldError, positive_int, shown, split

# The fields the gateway acts on itself or that from_anthropic takes apart; the others are
# from_anthropic's to map (max_tokens among them, folded with any other output limit).
_OWN_FIELDS = frozenset({"model", "messages", "system", "stream"})
# OpenAI's finish reasons in Anthropic's words; others (Anthropic's own) pass as they are.
_STOP = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}


def stop_reason(result: LLMResult) -> str:
    """The answer's stop reason in Anthropic's words."""
    reason = result.finish_reason
    if reason is None:
        return "tool_use" if result.tool_calls else "end_turn"
    return _STOP.get(reason, reason)


def usage_body(usage: Usage) -> dict[str, int]:
    # Usage counts input apart from cache reads and writes, as Anthropic does.
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    }


def message_id(response_id: str) -> str:
    return f"msg_{response_id}"


def tool_input(call: ToolCallRequest) -> Any:
    """The input object of a tool call, from its arguments text.

    Text that is not a JSON object goes out verbatim, as a string: `{}` would have the
    client run the tool with no arguments, a guess the model never made, while a string
    fails the client's own input check and shows what the model actually wrote.
    """
    if not call.arguments:
        return {}  # some OpenAI-compatible servers send nothing for a tool without parameters
    try:
        value = orjson.loads(call.arguments)
    except orjson.JSONDecodeError:
        return call.arguments
    return value if isinstance(value, dict) else call.arguments


def error_body(type: str, message: str, code: str | None, run_id: str | None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type, "message": message}
    if code is not None:
        error["code"] = code
    if run_id is not None:
        error["run_id"] = run_id
    return {"type": "error", "error": error}


class AnthropicDoor:
    kind = "anthropic"

    def parse(self, body: Any) -> ChatRequest:
        model, messages = model_and_messages(body)
        if not positive_int(body.get("max_tokens")):
            got = shown(body.get("max_tokens"))
            raise invalid("max_tokens", f"required, a positive integer; got {got}")
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise invalid("stream", f"expected a boolean; got {shown(stream)}")
        fields = {key: value for key, value in body.items() if key not in _OWN_FIELDS}
        try:
            canonical, fields = from_anthropic(body.get("system"), messages, fields)
            params, max_tokens = split(fields)
        except FieldError as exc:
            raise refused(exc) from None
        # Anthropic streams always carry usage, so include_usage has no say here.
        return ChatRequest(model, canonical, params, max_tokens, stream is True)

    def answer(self, result: LLMResult, request: ChatRequest, response_id: str) -> bytes:
        raw = result.raw
        if isinstance(raw, dict) and raw.get("type") == "message":
            # An Anthropic-kind upstream's own answer keeps every field it sent.
            return orjson.dumps({**raw, "id": message_id(response_id), "model": result.model})
        content: list[dict[str, Any]] = []
        if result.text:
            content.append({"type": "text", "text": result.text})
        content += [
            {"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input(call)}
            for call in result.tool_calls
        ]
        return orjson.dumps(
            {
                "id": message_id(response_id),
                "type": "message",
                "role": "assistant",
                "model": result.model,
                "content": content,
                "stop_reason": stop_reason(result),
                "stop_sequence": None,
                "usage": usage_body(result.usage),
            }
        )

    def error(
        self,
        type: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        run_id: str | None = None,
    ) -> bytes:
        # Anthropic's error shape has no param; the message names the field.
        return orjson.dumps(error_body(type, message, code, run_id))

    def stream(
        self, request: ChatRequest, response_id: str, model: str | None = None
    ) -> AnthropicStream:
        return AnthropicStream(response_id, model or request.model)


def _event(name: bytes, data: bytes) -> bytes:
    return b"event: " + name + b"\ndata: " + data + b"\n\n"


_TEXT_BLOCK = b'{"type":"text","text":""}'
_DELTA_OPEN = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_TEXT_DELTA = b',"delta":{"type":"text_delta","text":'
_JSON_DELTA = b',"delta":{"type":"input_json_delta","partial_json":'
_DELTA_CLOSE = b"}}\n\n"
_MESSAGE_STOP = _event(b"message_stop", b'{"type":"message_stop"}')


class AnthropicStream:
    """message_start, then content blocks (text, tool_use) as the deltas come, then
    message_delta with the stop reason and usage, and message_stop.

    A block is closed when one of the other kind (or another tool call) starts. Tool calls
    keep the block they opened: a late piece of an earlier call still names its index,
    which clients accumulate by."""

    __slots__ = ("_blocks", "_message_start", "_open", "_text_open", "_tools")

    def __init__(self, response_id: str, model: str) -> None:
        message: dict[str, Any] = {
            "id": message_id(response_id),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Not known until the upstream has answered; message_delta carries the figures.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        start = orjson.dumps({"type": "message_start", "message": message})
        self._message_start = _event(b"message_start", start)
        self._blocks = 0  # blocks started so far: the next one's index
        self._open: int | None = None  # the index of the block not yet stopped
        self._text_open = False
        self._tools: dict[int, int] = {}  # tool call index -> its block index

    def start(self) -> bytes:
        return self._message_start

    def delta(self, delta: StreamDelta) -> bytes:
        if delta.tool_index is None:
            return self._text(delta.text) if delta.text else b""
        block = self._tools.get(delta.tool_index)
        opening = b""
        if block is None:
            tool = {
                "type": "tool_use",
                "id": delta.tool_id or "",
                "name": delta.tool_name or "",
                "input": {},
            }
            opening = self._begin(orjson.dumps(tool))
            block = self._tools[delta.tool_index] = self._blocks - 1
        if not delta.tool_arguments:
            return opening
        fragment = orjson.dumps(delta.tool_arguments)
        index = str(block).encode()
        return opening + _DELTA_OPEN + index + _JSON_DELTA + fragment + _DELTA_CLOSE

    def end(self, result: LLMResult) -> bytes:
        data = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(result), "stop_sequence": None},
            "usage": usage_body(result.usage),
        }
        return self._close() + _event(b"message_delta", orjson.dumps(data)) + _MESSAGE_STOP

    def error(self, type: str, message: str, *, code: str | None, run_id: str | None) -> bytes:
        return _event(b"error", orjson.dumps(error_body(type, message, code, run_id)))

    def _text(self, text: str) -> bytes:
        opening = b"" if self._text_open else self._begin(_TEXT_BLOCK)
        self._text_open = True
        index = str(self._open).encode()
        return opening + _DELTA_OPEN + index + _TEXT_DELTA + orjson.dumps(text) + _DELTA_CLOSE

    def _begin(self, block: bytes) -> bytes:
        """Stops the open block and starts `block` as the next one."""
        closing = self._close()
        index = self._blocks
        self._blocks += 1
        self._open = index
        data = b'{"type":"content_block_start","index":%d,"content_block":%b}' % (index, block)
        return closing + _event(b"content_block_start", data)

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        data = b'{"type":"content_block_stop","index":%d}' % self._open
        self._open = None
        self._text_open = False
        return _event(b"content_block_stop", data)
