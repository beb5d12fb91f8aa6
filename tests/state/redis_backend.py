"""Counters factories of implementations backed by a server, for the contract suites.

RedisCounters runs against the Redis at CORRAL_TEST_REDIS_URL (redis://127.0.0.1:6379/0
by default; CI starts it), each test under a key prefix of its own. A Redis that does not
answer fails the test that needs it, with the URL: a skip would hide a broken setup.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

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


def redis_counters(clock: Any, **options: Any) -> RedisCounters:
    """RedisCounters on a fresh prefix, so no test sees another's keys."""
    require_redis()
    prefix = f"corral-test-{uuid.uuid4().hex}"
    return RedisCounters(REDIS_URL, prefix=prefix, clock=clock, wall_clock=clock, **options)


COUNTER_FACTORIES: dict[str, Callable[[Any], Any]] = {"redis": redis_counters}
