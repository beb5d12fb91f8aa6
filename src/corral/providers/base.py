"""What every provider adapter offers, and the small taxonomy its failures map to."""

from __future__ import annotations

import email.utils
import math
import time
from dataclasses import dataclass
from datetime import UTC
from enum import StrEnum
from typing import Any, Protocol

import orjson

from corral.calls import LLMCall, LLMResult, Usage
from corral.policy import Model


class FailureKind(StrEnum):
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    BAD_REQUEST = "bad_request"
    AUTH = "auth"
    CONTEXT_LENGTH = "context_length"
    CONTENT_POLICY = "content_policy"


class ProviderError(Exception):
    """An upstream call failed. `kind` decides whether retrying or falling back can help."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        usage: Usage | None = None,
    ) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        # What a call consumed before it failed (a stream cut mid-way): spent all the same.
        self.usage = usage
        self.cost_usd = 0.0  # what the budget gate charged for `usage`

    def with_usage(self, usage: Usage) -> ProviderError:
        """The same failure, carrying what the call consumed before it."""
        return ProviderError(
            self.kind, self.message, status=self.status, retry_after=self.retry_after, usage=usage
        )


class Adapter(Protocol):
    """One per provider; all share the supervisor's pooled HTTP client, which it closes."""

    async def complete(self, name: str, model: Model, call: LLMCall) -> LLMResult:
        """Send `call` to `model` (policy name `name`) and return its answer.

        With `call.sink` set the answer streams: each delta goes to the sink as it arrives
        and `call.delivered` turns true just before the first one does.
        """
        ...


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """What an error body says. OpenAI sends `{"error": {"message", "type", "code"}}`,
    Anthropic `{"type": "error", "error": {"type", "message"}}`; some OpenAI-compatible
    servers send the fields at the top level. Non-JSON bodies keep their text as the message."""

    type: str | None = None
    code: str | None = None
    message: str = ""

    @classmethod
    def parse(cls, body: bytes) -> ErrorBody:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return cls(message=body[:500].decode(errors="replace").strip())
        if not isinstance(data, dict):
            return cls(message=str(data)[:500])
        error = data.get("error", data)
        if isinstance(error, str):
            return cls(message=error)
        if not isinstance(error, dict):
            return cls()
        return cls(
            _text(error.get("type")), _text(error.get("code")), _text(error.get("message")) or ""
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


_CONTEXT_CODES = frozenset({"context_length_exceeded"})
_POLICY_CODES = frozenset({"content_policy_violation", "content_filter"})
# For servers that name no code: Anthropic's type is the generic invalid_request_error
# ("prompt is too long: ...", "input length and `max_tokens` exceed context limit: ..."), and
# OpenAI-compatible servers (vLLM, llama.cpp) often send only the message.
_CONTEXT_PHRASES = (
    "prompt is too long",
    "exceed context limit",
    "maximum context length",
    "context window",
    "context length",
)


def failure_for_status(status: int, error: ErrorBody) -> FailureKind:
    """Map an HTTP error status and its error body to the taxonomy.

    The body's code decides between the 400-class kinds; its message only when the
    server gave no code that says it.
    """
    if status == 429:
        return FailureKind.RATE_LIMITED
    if status in (401, 403):
        return FailureKind.AUTH
    if status in (408, 504):
        return FailureKind.TIMEOUT
    if status >= 500:
        return FailureKind.UNAVAILABLE
    if error.code in _POLICY_CODES or error.type in _POLICY_CODES:
        return FailureKind.CONTENT_POLICY
    if error.code in _CONTEXT_CODES:
        return FailureKind.CONTEXT_LENGTH
    if status == 400 and error.code is None:
        message = error.message.lower()
        if any(phrase in message for phrase in _CONTEXT_PHRASES):
            return FailureKind.CONTEXT_LENGTH
    return FailureKind.BAD_REQUEST


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait by a Retry-After header: delay-seconds or an HTTP-date (RFC 9110)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None  # unreadable: our own backoff decides
        if when.tzinfo is None:  # an HTTP-date is always GMT, whatever zone it spells
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None
