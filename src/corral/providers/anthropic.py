"""Anthropic Messages adapter. OpenAI-style messages are mapped to Anthropic's shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson

from corral.calls import LLMCall, LLMResult, ToolCallRequest, Usage
from corral.policy import Model
from corral.providers.http import malformed, post_json

API_VERSION = "2023-06-01"


def split_system(messages: Sequence[Mapping[str, Any]]) -> tuple[str | None, list[Any]]:
    """Anthropic takes the system prompt apart from the turns."""
    system = [m["content"] for m in messages if m.get("role") == "system"]
    turns = [m for m in messages if m.get("role") != "system"]
    return ("\n\n".join(str(s) for s in system) if system else None), turns


class AnthropicAdapter:
    def __init__(
        self, client: httpx.AsyncClient, base_url: str, api_key: str, timeout: float
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/v1/messages"
        self._headers = {
            "x-api-key": api_key,
            "anthropic-version": API_VERSION,
            "Content-Type": "application/json",
        }
        self._timeout = timeout

    async def complete(self, name: str, model: Model, call: LLMCall) -> LLMResult:
        system, turns = split_system(call.messages)
        params = dict(call.params)
        headers = {**self._headers, **params.pop("extra_headers", {})}
        body: dict[str, Any] = {
            **params,
            "model": model.model,
            "messages": turns,
            "max_tokens": call.max_tokens or model.max_output_tokens,
        }
        if system is not None:
            body["system"] = system
        answer = await post_json(self._client, self._url, body, headers, self._timeout)
        try:
            blocks = answer["content"]
            usage = answer["usage"]
            text = "".join(b["text"] for b in blocks if b["type"] == "text")
            tools = tuple(
                ToolCallRequest(b["id"], b["name"], orjson.dumps(b["input"]).decode())
                for b in blocks
                if b["type"] == "tool_use"
            )
            return LLMResult(
                text=text,
                usage=Usage(
                    usage["input_tokens"],
                    usage["output_tokens"],
                    usage.get("cache_read_input_tokens") or 0,
                    usage.get("cache_creation_input_tokens") or 0,
                ),
                model=name,
                tool_calls=tools,
                finish_reason=answer.get("stop_reason"),
                raw=answer,
            )
        except (KeyError, TypeError) as exc:
            raise malformed(self._url, "content or usage") from exc
