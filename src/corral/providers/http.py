"""The JSON-over-HTTP exchange both adapters share, on one pooled keep-alive client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from corral.providers.base import (
    FailureKind,
    ProviderError,
    failure_for_status,
    retry_after_seconds,
)


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    seconds: float,
) -> Any:
    """POST `body`, return the decoded JSON answer, or raise ProviderError with its kind."""
    try:
        response = await client.post(
            url, content=orjson.dumps(body), headers=headers, timeout=seconds
        )
    except httpx.TimeoutException as exc:
        raise ProviderError(FailureKind.TIMEOUT, f"{url}: no answer in {seconds:g}s") from exc
    except httpx.TransportError as exc:
        raise ProviderError(FailureKind.UNAVAILABLE, f"{url}: {type(exc).__name__}") from exc
    if response.status_code >= 400:
        text = response.text[:500]
        raise ProviderError(
            failure_for_status(response.status_code, text),
            f"{url} answered HTTP {response.status_code}: {text}",
            status=response.status_code,
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
        )
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise ProviderError(FailureKind.UNAVAILABLE, f"{url} answered malformed JSON") from exc


def malformed(url: str, what: str) -> ProviderError:
    return ProviderError(FailureKind.UNAVAILABLE, f"{url} answered a body without {what}")
