"""The Counters interface: hot shared counters behind exact budgets and rate limits.

Every amount is an integer in the caller's unit (micro-USD, tokens, calls), so
sums are exact. A counter has `used` (settled) and `held` (reserved by calls in
flight); a reservation is admitted only if it fits under every limit at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple


def check_units(name: str, value: int) -> None:
    """Reject anything but a non-negative int, naming the argument."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")


@dataclass(frozen=True, slots=True)
class Hold:
    """Reserve `amount` on `key` if used + held + amount stays within `limit`.

    `ttl` makes the key a fixed window (for per-day budgets, say): `ttl` seconds
    after the key is first written its usage starts over from zero. Amounts still
    held by calls in flight carry into the new window, where they will settle.
    """

    key: str
    amount: int
    limit: int
    ttl: float | None = None

    def __post_init__(self) -> None:
        check_units(f"hold {self.key!r} amount", self.amount)
        check_units(f"hold {self.key!r} limit", self.limit)
        if self.ttl is not None and not self.ttl > 0:
            raise ValueError(f"hold {self.key!r} ttl must be > 0, got {self.ttl!r}")


@dataclass(frozen=True, slots=True)
class Reservation:
    """Amounts held by one admitted reserve(), to be settled once by commit or release."""

    id: str
    holds: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Refusal:
    """The first hold that did not fit, with the numbers a halt message needs."""

    key: str
    limit: int
    used: int
    held: int
    amount: int


class CounterValue(NamedTuple):
    used: int
    held: int


class Counters(ABC):
    """Atomic counters; each operation is O(1) per key it touches."""

    @abstractmethod
    async def reserve(self, holds: Sequence[Hold]) -> Reservation | Refusal:
        """Hold every amount, or none if any would cross its limit.

        Keys must be distinct (ValueError otherwise): one key under two limits has
        no single meaning.
        """

    @abstractmethod
    async def commit(self, reservation: Reservation, actual: Sequence[int]) -> None:
        """Settle with the actual amounts, one per hold in order: used += actual, held -= held.

        `actual` may exceed what was held: usage is recorded as it happened. Settling
        an unknown or already settled reservation does nothing.
        """

    @abstractmethod
    async def release(self, reservation: Reservation) -> None:
        """Settle without usage: held -= held. A no-op if already settled."""

    @abstractmethod
    async def add(self, key: str, amount: int, ttl: float | None = None) -> int:
        """used += amount, with no limit; return the new used."""

    @abstractmethod
    async def get(self, key: str) -> CounterValue: ...

    @abstractmethod
    async def take(self, key: str, amount: float, rate: float, capacity: float) -> float:
        """Token bucket: take `amount` tokens and return 0.0, or take none and return
        the seconds until they would be there.

        The bucket starts full at `capacity` and refills at `rate` tokens per second.
        Bucket keys are a namespace apart from counter keys. ValueError if `amount`
        exceeds `capacity`, since it could never be served.
        """

    @abstractmethod
    async def close(self) -> None: ...
