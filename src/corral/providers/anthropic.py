"""Anthropic Messages adapter, streamed or not. Canonical (OpenAI-style) requests are mapped to
its shape by `anthropic_format.to_anthropic`."""

from __future__ import annotations

from typing import Any

import orjson

from corral.calls import LLMCall, LLMResult, StreamDelta, ToolCallRequest, Usage
from corral.policy import Model
from corral.providers.anthropic_format import to_anthropic
from corral.providers.base import ErrorBody, FailureKind, ProviderError
from corral.providers.http import Endpoint, HttpClient
from corral.providers.params import outgoing
from corral.providers.sse import Event, StreamedAnswer, as_text

API_VERSION = "2023-06-01"


class AnthropicAdapter:
    def __init__(self, client: HttpClient, base_url: str, api_key: str, timeout: float) -> None:
        self._endpoint = Endpoint(client, base_url.rstrip("/") + "/v1/messages", timeout)
        self._headers = {
            "x-api-key": api_key,
            "anthropic-version": API_VERSION,
            "Content-Type": "application/json",
        }

    async def complete(self, name: str, model: Model, call: LLMCall) -> LLMResult:
        fields, extra_headers, max_tokens = outgoing(call, model.max_output_tokens)
        try:
            system, turns, params = to_anthropic(call.messages, fields)
        except ValueError as exc:
            # The request itself has no Anthropic form: no retry or other attempt can help.
            raise ProviderError(
                FailureKind.BAD_REQUEST, f"the request cannot be sent to Anthropic: {exc}"
            ) from exc
        headers = {**self._headers, **extra_headers}
        body: dict[str, Any] = {
            **params,
            "model": model.model,
            "messages": turns,
            "max_tokens": max_tokens,
            "stream": call.sink is not None,
        }
        if system is not None:
            body["system"] = system
        if call.sink is None:
            return self._answer(name, await self._endpoint.post_json(body, headers))
        answer = _Stream(call, self._endpoint.url, max_tokens)
        return await answer.read(self._endpoint.stream(body, headers), name)

    def _answer(self, name: str, answer: Any) -> LLMResult:
        try:
            blocks = answer["content"]
            text = "".join(b["text"] for b in blocks if b["type"] == "text")
            tools = tuple(
                ToolCallRequest(b["id"], b["name"], orjson.dumps(b["input"]).decode())
                for b in blocks
                if b["type"] == "tool_use"
            )
            return LLMResult(
                text=text,
                usage=_usage(answer["usage"]),
                model=name,
                tool_calls=tools,
                finish_reason=answer.get("stop_reason"),
                raw=answer,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise self._endpoint.malformed("a body without content or usage") from exc


def _usage(usage: Any) -> Usage:
    return Usage(
        usage["input_tokens"],
        usage["output_tokens"],
        usage.get("cache_read_input_tokens") or 0,
        usage.get("cache_creation_input_tokens") or 0,
    )


class _Stream(StreamedAnswer):
    """message_start (input usage), content blocks (text; tool_use with its input as JSON
    fragments), message_delta (stop reason, output usage), message_stop."""

    terminator = "message_stop"

    def __init__(self, call: LLMCall, url: str, max_tokens: int | None) -> None:
        super().__init__(call, url, max_tokens)
        # Tool calls count from 0 like OpenAI's, apart from the text blocks between them.
        self._tool_at: dict[int, int] = {}

    async def feed(self, event: Event) -> None:
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError as exc:
            raise self.malformed(
                f"an event that is not JSON ({exc}): {event.data[:200]!r}"
            ) from exc
        kind = (data.get("type") if isinstance(data, dict) else None) or event.name
        if kind == "error":
            error = ErrorBody.parse(event.data.encode())
            raise ProviderError(
                FailureKind.UNAVAILABLE,
                f"{self.url} streamed an error: {error.type}: {error.message}"[:500],
            )
        # The whole event is read before any of it is handed on, so a bad event delivers
        # nothing and an error the sink raises is never taken for a bad event.
        try:
            delta = self._read(kind, data)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise self.malformed(
                f"a {kind} event without its fields: {event.data[:200]!r}"
            ) from exc
        if delta is not None:
            await self.add(delta)

    def _read(self, kind: str, data: Any) -> StreamDelta | None:
        """Takes in one event's figures and returns the piece of the answer it carries."""
        if kind == "message_start":
            usage = data["message"]["usage"]
            self.input_tokens = int(usage["input_tokens"])
            self.cache_read_tokens = int(usage.get("cache_read_input_tokens") or 0)
            self.cache_write_tokens = int(usage.get("cache_creation_input_tokens") or 0)
        elif kind == "content_block_start":
            index, block = data["index"], data["content_block"]
            if block["type"] == "text":
                return StreamDelta(text=as_text(block.get("text")))
            if block["type"] == "tool_use":
                self._tool_at[index] = at = len(self._tool_at)
                return StreamDelta(
                    tool_index=at, tool_id=as_text(block["id"]), tool_name=as_text(block["name"])
                )
        elif kind == "content_block_delta":
            index, delta = data["index"], data["delta"]
            if delta["type"] == "text_delta":
                return StreamDelta(text=as_text(delta["text"]))
            if delta["type"] == "input_json_delta" and index in self._tool_at:
                arguments = as_text(delta["partial_json"])
                return StreamDelta(tool_index=self._tool_at[index], tool_arguments=arguments)
        elif kind == "content_block_stop":
            tool = self._tool_at.get(data["index"])
            # A tool that takes no input may stream none: its arguments are still an object.
            if tool is not None and not self.tool_arguments(tool):
                return StreamDelta(tool_index=tool, tool_arguments="{}")
        elif kind == "message_delta":
            self.finish_reason = as_text(data["delta"].get("stop_reason")) or None
            output_tokens = (data.get("usage") or {}).get("output_tokens")
            if output_tokens is not None:
                self.output_tokens = int(output_tokens)
        elif kind == "message_stop":
            if self.input_tokens is None:
                raise self.malformed("message_stop without a message_start before it")
            self.done = True
        return None  # ping, and events of kinds this adapter does not use
