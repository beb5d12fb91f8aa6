"""What every provider adapter offers, and the small taxonomy its failures map to."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

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


class Adapter(Protocol):
    """One per provider; all share the supervisor's pooled HTTP client, which it closes."""

    async def complete(self, name: str, model: Model, call: LLMCall) -> LLMResult:
        """Send `call` to `model` (policy name `name`) and return its answer."""
        ...


def failure_for_status(status: int, body: str) -> FailureKind:
    """Map an HTTP error status (and a hint in the body) to the taxonomy."""
    lowered = body.lower()
    if status == 429:
        return FailureKind.RATE_LIMITED
    if status in (401, 403):
        return FailureKind.AUTH
    if status in (408, 504):
        return FailureKind.TIMEOUT
    if status == 400 and ("context_length" in lowered or "context window" in lowered):
        return FailureKind.CONTEXT_LENGTH
    if status == 400 and "content_policy" in lowered:
        return FailureKind.CONTENT_POLICY
    if status >= 500:
        return FailureKind.UNAVAILABLE
    return FailureKind.BAD_REQUEST


def retry_after_seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from model APIs; fall back to our own backoff
