"""The OpenAI Chat Completions door: `POST /v1/chat/completions` requests, answers, chunks.

Its requests are already in the canonical shape, so parsing only checks them (naming the
field that is wrong, as OpenAI does), takes out what the gateway handles itself, and holds
the other fields to `params.split`: output limits folded into one max_tokens, the fields
Corral forwards, the rest refused.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from corral.calls import LLMResult, StreamDelta, Usage
from corral.gateway.wire import ChatRequest, ClientError
from corral.providers.params import FieldError, shown, split

_ROLES = ("system", "user", "assistant", "tool", "developer")
_ROLE_SET = frozenset(_ROLES)
_ROLE_LIST = ", ".join(_ROLES)
# The fields the gateway acts on itself; all others are params.split's to forward or refuse.
_OWN_FIELDS = frozenset({"model", "messages", "stream", "stream_options"})
# Anthropic's stop reasons in OpenAI's words; other reasons (OpenAI's own) pass as they are.
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "refusal": "content_filter",
}


def invalid(param: str, message: str) -> ClientError:
    """A 400 naming `param`, in the message as well since some clients show only that."""
    return ClientError(400, "invalid_request_error", f"{param}: {message}", param=param)


def refused(exc: FieldError) -> ClientError:
    """The 400 of a field params.split or the format mapping would not take."""
    return ClientError(400, "invalid_request_error", str(exc), param=exc.where)


def finish_reason(result: LLMResult) -> str:
    """The answer's finish reason in OpenAI's words."""
    reason = result.finish_reason
    if reason is None:
        return "tool_calls" if result.tool_calls else "stop"
    return _FINISH.get(reason, reason)


def usage_body(usage: Usage) -> dict[str, Any]:
    """OpenAI counts every prompt token in prompt_tokens, cached ones included, and tells
    the cache reads apart in its details."""
    prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
    }


def completion_id(response_id: str) -> str:
    return f"chatcmpl-{response_id}"


def error_fields(
    type: str, message: str, code: str | None, param: str | None, run_id: str | None
) -> dict[str, Any]:
    fields: dict[str, Any] = {"message": message, "type": type, "param": param, "code": code}
    if run_id is not None:
        fields["run_id"] = run_id
    return fields


def model_and_messages(body: Any) -> tuple[str, list[Any]]:
    """What both APIs require alike: a JSON object with a model and a non-empty messages
    array (the messages themselves are each API's own to check)."""
    if not isinstance(body, dict):
        raise ClientError(
            400,
            "invalid_request_error",
            f"the request body must be a JSON object; got {shown(body)}",
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", f"expected a non-empty string; got {shown(model)}")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", f"expected a non-empty array; got {shown(messages)}")
    return model, messages


class OpenAIDoor:
    kind = "openai"

    def parse(self, body: Any) -> ChatRequest:
        model, messages = model_and_messages(body)
        for index, message in enumerate(messages):
            _check_message(message, f"messages[{index}]")
        _check_tools(body.get("tools"))
        try:
            params, max_tokens = split(
                {key: value for key, value in body.items() if key not in _OWN_FIELDS}
            )
        except FieldError as exc:
            raise refused(exc) from None
        return ChatRequest(
            model=model,
            messages=messages,
            params=params,
            max_tokens=max_tokens,
            stream=_flag(body.get("stream"), "stream"),
            include_usage=_include_usage(body.get("stream_options")),
        )

    def answer(self, result: LLMResult, request: ChatRequest, response_id: str) -> bytes:
        raw = result.raw
        if isinstance(raw, dict) and raw.get("object") == "chat.completion":
            # An OpenAI-kind upstream's own answer keeps every field it sent.
            return orjson.dumps({**raw, "id": completion_id(response_id), "model": result.model})
        message: dict[str, Any] = {
            "role": "assistant",
            "content": result.text if result.text or not result.tool_calls else None,
        }
        if result.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in result.tool_calls
            ]
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": finish_reason(result),
        }
        return orjson.dumps(
            {
                "id": completion_id(response_id),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": result.model,
                "choices": [choice],
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
        return orjson.dumps({"error": error_fields(type, message, code, param, run_id)})

    def stream(
        self, request: ChatRequest, response_id: str, model: str | None = None
    ) -> OpenAIStream:
        return OpenAIStream(request, response_id, model or request.model)


class OpenAIStream:
    """`chat.completion.chunk` events. Every chunk shares its head, so the bytes around the
    delta are made once and each delta costs one small orjson.dumps."""

    __slots__ = ("_choice_open", "_include_usage", "_usage_open")

    _CHOICE_CLOSE = b',"logprobs":null,"finish_reason":null}]}\n\n'
    _DONE = b"data: [DONE]\n\n"

    def __init__(self, request: ChatRequest, response_id: str, model: str) -> None:
        head = orjson.dumps(
            {
                "id": completion_id(response_id),
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
            }
        )[:-1]  # without its closing brace, to go on with the chunk's own fields
        self._choice_open = b"data: " + head + b',"choices":[{"index":0,"delta":'
        self._usage_open = b"data: " + head + b',"choices":[],"usage":'
        self._include_usage = request.include_usage

    def start(self) -> bytes:
        return self._choice_open + b'{"role":"assistant","content":""}' + self._CHOICE_CLOSE

    def delta(self, delta: StreamDelta) -> bytes:
        if delta.tool_index is None:
            if not delta.text:
                return b""
            piece = b'{"content":' + orjson.dumps(delta.text) + b"}"
            return self._choice_open + piece + self._CHOICE_CLOSE
        call: dict[str, Any] = {"index": delta.tool_index}
        if delta.tool_id:
            call["id"] = delta.tool_id
            call["type"] = "function"
        function = {"arguments": delta.tool_arguments}
        if delta.tool_name:
            function["name"] = delta.tool_name
        call["function"] = function
        piece = b'{"tool_calls":[' + orjson.dumps(call) + b"]}"
        return self._choice_open + piece + self._CHOICE_CLOSE

    def end(self, result: LLMResult) -> bytes:
        finish = orjson.dumps(finish_reason(result))
        closing = self._choice_open + b'{},"logprobs":null,"finish_reason":' + finish + b"}]}\n\n"
        if self._include_usage:
            closing += self._usage_open + orjson.dumps(usage_body(result.usage)) + b"}\n\n"
        return closing + self._DONE

    def error(self, type: str, message: str, *, code: str | None, run_id: str | None) -> bytes:
        # The openai client raises on a chunk holding `error`; no [DONE] follows it.
        event = {"error": error_fields(type, message, code, None, run_id)}
        return b"data: " + orjson.dumps(event) + b"\n\n"


def _check_message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise invalid(where, f"expected a message object; got {shown(message)}")
    role = message.get("role")
    if not isinstance(role, str) or role not in _ROLE_SET:
        raise invalid(f"{where}.role", f"expected one of {_ROLE_LIST}; got {shown(role)}")
    content = message.get("content")
    if isinstance(content, list):
        _check_parts(content, f"{where}.content")
    elif not isinstance(content, str) and not (
        content is None and role == "assistant" and message.get("tool_calls")
    ):
        raise invalid(
            f"{where}.content",
            "expected a string or an array of content parts (null only for an assistant "
            f"message with tool_calls); got {shown(content)}",
        )
    if role == "assistant":
        _check_tool_calls(message.get("tool_calls"), f"{where}.tool_calls")
    elif role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise invalid(
                f"{where}.tool_call_id",
                f"expected the id of the tool call this answers; got {shown(call_id)}",
            )


def _check_parts(parts: list[Any], where: str) -> None:
    for index, part in enumerate(parts):
        at = f"{where}[{index}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise invalid(at, "expected a content part: an object with a string type")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise invalid(f"{at}.text", f"expected a string; got {shown(part.get('text'))}")


def _check_tool_calls(calls: Any, where: str) -> None:
    if calls is None:
        return
    if not isinstance(calls, list):
        raise invalid(where, f"expected an array; got {shown(calls)}")
    for index, call in enumerate(calls):
        at = f"{where}[{index}]"
        if not isinstance(call, dict):
            raise invalid(at, f"expected a tool call object; got {shown(call)}")
        if not isinstance(call.get("id"), str) or not call["id"]:
            raise invalid(f"{at}.id", f"expected a non-empty string; got {shown(call.get('id'))}")
        function = call.get("function")
        if not isinstance(function, dict):
            raise invalid(f"{at}.function", f"expected an object; got {shown(function)}")
        for field in ("name", "arguments"):
            if not isinstance(function.get(field), str):
                got = shown(function.get(field))
                raise invalid(f"{at}.function.{field}", f"expected a string; got {got}")


def _check_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise invalid("tools", f"expected an array of tools; got {shown(tools)}")
    for index, tool in enumerate(tools):
        at = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise invalid(at, f"expected a tool object; got {shown(tool)}")
        if tool.get("type") != "function":
            raise invalid(f"{at}.type", f"expected 'function'; got {shown(tool.get('type'))}")
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise invalid(f"{at}.function.name", f"expected a non-empty string; got {shown(name)}")


def _flag(value: Any, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(field, f"expected a boolean; got {shown(value)}")
    return value


def _include_usage(options: Any) -> bool:
    if options is None:
        return False
    if not isinstance(options, dict):
        raise invalid("stream_options", f"expected an object; got {shown(options)}")
    return _flag(options.get("include_usage"), "stream_options.include_usage")
