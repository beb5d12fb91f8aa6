"""Counters factories of implementations backed by a server, for the contract suites."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

COUNTER_FACTORIES: dict[str, Callable[[Any], Any]] = {}
