"""OpenAI-compatible Chat Completions adapter, streamed or not."""

from __future__ import annotations

from typing import Any

import orjson

from corral.calls import LLMCall, LLMResult, StreamDelta, ToolCallRequest, Usage
from corral.policy import Model
from corral.providers.base import ErrorBody, FailureKind, ProviderError
from corral.providers.http import Endpoint, HttpClient
from corral.providers.params import outgoing
from corral.providers.sse import Event, StreamedAnswer, as_text


class OpenAIAdapter:
    def __init__(self, client: HttpClient, base_url: str, api_key: str, timeout: float) -> None:
        self._endpoint = Endpoint(client, base_url.rstrip("/") + "/chat/completions", timeout)
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    async def complete(self, name: str, model: Model, call: LLMCall) -> LLMResult:
        params, extra_headers, max_tokens = outgoing(call, model.max_output_tokens)
        headers = {**self._headers, **extra_headers}
        body: dict[str, Any] = {
            **params,
            "model": model.model,
            "messages": call.messages,
            # The one limit, as max_tokens: every OpenAI-compatible server reads it, while
            # one that predates max_completion_tokens would ignore that and not stop at all.
            # (OpenAI's reasoning models refuse max_tokens: the call fails, unbilled.)
            "max_tokens": max_tokens,
            "stream": call.sink is not None,
        }
        if call.sink is None:
            return self._answer(name, await self._endpoint.post_json(body, headers))
        body["stream_options"] = {"include_usage": True}  # else a stream reports no usage
        answer = _Stream(call, self._endpoint.url, max_tokens)
        return await answer.read(self._endpoint.stream(body, headers), name)

    def _answer(self, name: str, answer: Any) -> LLMResult:
        try:
            choice = answer["choices"][0]
            message = choice["message"]
            tools = tuple(
                ToolCallRequest(t["id"], t["function"]["name"], t["function"]["arguments"])
                for t in message.get("tool_calls") or ()
            )
            return LLMResult(
                text=message.get("content") or "",
                usage=_usage(answer["usage"]),
                model=name,
                tool_calls=tools,
                finish_reason=choice.get("finish_reason"),
                raw=answer,
            )
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise self._endpoint.malformed("a body without choices, message or usage") from exc


def _usage(usage: Any) -> Usage:
    """OpenAI counts cached prompt tokens inside prompt_tokens; Usage keeps them apart."""
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return Usage(usage["prompt_tokens"] - cached, usage["completion_tokens"], cached)


class _Stream(StreamedAnswer):
    """Chunks of `chat.completion.chunk`, then one with `usage` and no choices, then [DONE]."""

    terminator = "[DONE]"

    async def feed(self, event: Event) -> None:
        if event.data == "[DONE]":
            self.done = True
            return
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError as exc:
            raise self.malformed(f"a chunk that is not JSON ({exc}): {event.data[:200]!r}") from exc
        if isinstance(chunk, dict) and chunk.get("error") is not None:
            error = ErrorBody.parse(event.data.encode())
            raise ProviderError(
                FailureKind.UNAVAILABLE, f"{self.url} streamed an error: {error.message}"[:500]
            )
        # The whole chunk is read before any of it is handed on, so a bad chunk delivers
        # nothing and an error the sink raises is never taken for a bad chunk.
        try:
            deltas = self._read(chunk)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise self.malformed(
                f"a chunk without choices, delta or tool call index: {event.data[:200]!r}"
            ) from exc
        for delta in deltas:
            await self.add(delta)

    def _read(self, chunk: Any) -> list[StreamDelta]:
        choices = chunk["choices"]
        if chunk.get("usage"):
            usage = _usage(chunk["usage"])
            self.input_tokens = usage.input_tokens
            self.output_tokens = usage.output_tokens
            self.cache_read_tokens = usage.cache_read_tokens
        deltas: list[StreamDelta] = []
        for choice in choices:
            if choice.get("index", 0) != 0:  # other choices (n > 1) are not part of this answer
                continue
            delta = choice.get("delta") or {}
            deltas.append(StreamDelta(text=as_text(delta.get("content"))))
            for piece in delta.get("tool_calls") or ():
                index = piece["index"]
                if not isinstance(index, int):
                    raise TypeError(f"tool call index {index!r}")
                function = piece.get("function") or {}
                deltas.append(
                    StreamDelta(
                        tool_index=index,
                        tool_id=as_text(piece.get("id")) or None,
                        tool_name=as_text(function.get("name")) or None,
                        tool_arguments=as_text(function.get("arguments")),
                    )
                )
            if choice.get("finish_reason"):
                self.finish_reason = as_text(choice["finish_reason"])
        return deltas
