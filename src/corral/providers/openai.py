"""OpenAI-compatible Chat Completions adapter."""

from __future__ import annotations

from typing import Any

import httpx

from corral.calls import LLMCall, LLMResult, ToolCallRequest, Usage
from corral.policy import Model
from corral.providers.http import malformed, post_json


class OpenAIAdapter:
    def __init__(
        self, client: httpx.AsyncClient, base_url: str, api_key: str, timeout: float
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._timeout = timeout

    async def complete(self, name: str, model: Model, call: LLMCall) -> LLMResult:
        params = dict(call.params)
        headers = {**self._headers, **params.pop("extra_headers", {})}
        body: dict[str, Any] = {**params, "model": model.model, "messages": call.messages}
        if call.max_tokens is not None:
            body["max_tokens"] = call.max_tokens
        answer = await post_json(self._client, self._url, body, headers, self._timeout)
        try:
            choice = answer["choices"][0]
            message = choice["message"]
            usage = answer["usage"]
            tools = tuple(
                ToolCallRequest(t["id"], t["function"]["name"], t["function"]["arguments"])
                for t in message.get("tool_calls") or ()
            )
            return LLMResult(
                text=message.get("content") or "",
                usage=Usage(usage["prompt_tokens"], usage["completion_tokens"]),
                model=name,
                tool_calls=tools,
                finish_reason=choice.get("finish_reason"),
                raw=answer,
            )
        except (KeyError, IndexError, TypeError) as exc:
            raise malformed(self._url, "choices, message or usage") from exc
