"""Counters factories of implementations backed by a server, for the contract suites.

RedisCounters runs against the Redis at CORRAL_TEST_REDIS_URL (redis://127.0.0.1:6379/0
by default; CI starts it), each test under a key prefix of its own whose keys go when the
counters close. A Redis that does not answer fails the test that needs it, naming the
URL: a skip would hide a broken setup.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from corral.state.redis import RedisCounters

REDIS_URL = os.environ.get("CORRAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_redis() -> None:
    """Fail the test, naming the URL, unless something listens at REDIS_URL."""
    parts = urlsplit(REDIS_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 2):
            pass
    except OSError as exc:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({exc}): start it (see .ci/run) or set "
            "CORRAL_TEST_REDIS_URL",
            pytrace=False,
        )


def fresh_prefix() -> str:
    return f"corral-test-{uuid.uuid4().hex}"


async def purge(prefix: str) -> int:
    """Delete every key under `prefix` (its hash tag); how many there were."""
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{{{prefix}}}:*", count=1000)]
        if keys:
            await client.unlink(*keys)
        return len(keys)
    finally:
        await client.aclose()


class PurgedRedisCounters(RedisCounters):
    """RedisCounters whose keys are deleted when it closes: tests leave nothing behind."""

    def __init__(self, url: str, *, prefix: str, **options: Any) -> None:
        super().__init__(url, prefix=prefix, **options)
        self.prefix = prefix

    async def close(self) -> None:
        await super().close()
        await purge(self.prefix)


def redis_counters(clock: Any, *, prefix: str | None = None, **options: Any) -> RedisCounters:
    """RedisCounters on a fresh prefix (or `prefix`), so no test sees another's keys."""
    require_redis()
    return PurgedRedisCounters(
        REDIS_URL, prefix=prefix or fresh_prefix(), clock=clock, wall_clock=clock, **options
    )


COUNTER_FACTORIES: dict[str, Callable[[Any], Any]] = {"redis": redis_counters}
