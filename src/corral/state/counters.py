"""The Counters interface: hot shared counters behind exact budgets, rate limits and breakers.

Every amount is an integer in the caller's unit (micro-USD, tokens, calls), so
sums are exact. A counter has `used` (settled) and `held` (reserved by calls in
flight); a reservation is admitted only if it fits under every limit at once.

Circuit breakers live here too, so every node sharing the counters shares each
breaker's state: each breaker operation is one atomic step over one key.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
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
        # Built on every call: the common case is one cheap test, the message is built on failure.
        amount, limit = self.amount, self.limit
        if type(amount) is not int or type(limit) is not int or amount < 0 or limit < 0:
            check_units(f"hold {self.key!r} amount", amount)
            check_units(f"hold {self.key!r} limit", limit)
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


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """How a breaker decides (resilience4j's count-based breaker); built once per policy.

    window: outcomes a closed breaker remembers, newest first.
    min_calls: outcomes the window must hold before the breaker may open (at most `window`).
    failure_rate, slow_rate: fractions of the window that open it when reached.
    open_for: seconds an open breaker refuses every call before it half-opens.
    half_open_probes: trial calls a half-open breaker lets through; their outcomes decide.
    probe_silence: seconds a half-open breaker with probes out waits for news of any
      (a probe admitted or reported) before it opens again; without it a probe
      whose process died would hold a shared breaker half-open, refusing all, forever.
    """

    window: int
    min_calls: int
    failure_rate: float
    slow_rate: float
    open_for: float
    half_open_probes: int
    probe_silence: float

    def __post_init__(self) -> None:
        if not 1 <= self.min_calls <= self.window:
            raise ValueError(
                f"breaker min_calls must be in [1, window={self.window}], got {self.min_calls}"
            )
        if self.half_open_probes < 1:
            raise ValueError(f"breaker half_open_probes must be >= 1, got {self.half_open_probes}")
        for name in ("failure_rate", "slow_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"breaker {name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("open_for", "probe_silence"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"breaker {name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Admission:
    """A breaker's answer to one call.

    `generation` names the breaker's episode (it grows at every change of state);
    an outcome is counted only in the episode its call was admitted in. A refused
    call gets `retry_in`: the seconds until an open breaker half-opens, 0.0 while a
    half-open breaker waits for its probes. `changed`: this admission moved the
    breaker (open to half-open, or a silent half-open back to open).
    """

    admitted: bool
    state: BreakerState
    generation: int
    retry_in: float = 0.0
    changed: bool = False


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """One breaker as stored.

    `calls`, `failures`, `slow`: closed, the outcomes in the window; half-open, the
    probes' outcomes so far; open, the figures that opened it. `open_until` is when an
    open breaker half-opens (it still reads open until the next admission past it).
    """

    state: BreakerState
    generation: int
    calls: int
    failures: int
    slow: int
    probes_out: int
    opened_at: float | None
    open_until: float | None

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    @property
    def slow_rate(self) -> float:
        return self.slow / self.calls if self.calls else 0.0


class CountersUnavailable(Exception):
    """The shared counters could not be reached or did not answer: the operation did not
    happen, or its outcome is unknown. Callers must refuse the call it guarded (fail
    closed): admitting it would spend uncounted."""


class Counters(ABC):
    """Atomic counters; each operation is O(1) per key it touches."""

    # True when several processes share these counters (they hold the truth of every
    # node's spending), False when they live in one process and start empty with it.
    shared: bool = False

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
    async def drop(self, keys: Sequence[str]) -> None:
        """Forget these counters (a finished run's, say): a later read sees zero. A key
        with amounts still held is kept, since calls in flight will settle on it."""

    @abstractmethod
    async def get(self, key: str) -> CounterValue: ...

    @abstractmethod
    async def get_many(self, keys: Sequence[str]) -> list[CounterValue]:
        """`get` for several keys in one round trip (one MGET-like read on Redis)."""

    @abstractmethod
    async def take(self, key: str, amount: float, rate: float, capacity: float) -> float:
        """Token bucket: take `amount` tokens and return 0.0, or take none and return
        the seconds until they would be there.

        The bucket starts full at `capacity` and refills at `rate` tokens per second.
        Bucket keys are a namespace apart from counter keys. ValueError if `amount`
        exceeds `capacity`, since it could never be served.
        """

    @abstractmethod
    async def give(self, key: str, amount: float, capacity: float) -> None:
        """Put `amount` tokens back into a bucket (never past `capacity`): a call that
        took its worst case returns what it did not use. Unknown buckets are left alone."""

    # Circuit breakers. Each method is one atomic read-modify-write of one breaker
    # key (one Lua script on Redis), O(1) whatever the window: a ring of `window`
    # outcome flags plus running counts of calls, failures and slow calls. Breaker
    # keys are a namespace apart from counters and buckets. `now` is wall-clock
    # seconds from the caller, since several nodes share one breaker.

    @abstractmethod
    async def breaker_admit(self, key: str, now: float, settings: BreakerSettings) -> Admission:
        """Let one call through breaker `key`, or refuse it.

        Closed: admitted. Open: refused until `open_until`; the first admission at or
        after it half-opens the breaker (a new episode with no outcomes). Half-open:
        admitted as a probe while probes out plus probe outcomes are fewer than
        `half_open_probes`, else refused; a half-open breaker with probes out and no
        news of any for `probe_silence` opens again for `open_for`. A key never
        recorded is a closed breaker, and admitting through it writes nothing.
        """

    @abstractmethod
    async def breaker_record(
        self,
        key: str,
        admission: Admission,
        *,
        failed: bool,
        slow: bool,
        now: float,
        settings: BreakerSettings,
    ) -> BreakerSnapshot | None:
        """Count the outcome of a call `admission` let through; the breaker's snapshot if
        this outcome changed its state, else None.

        Dropped for a refused admission, and unless the breaker is still in the
        admission's episode: a call admitted before the breaker opened says nothing
        about the fresh window or the probes that came after.
        Closed: the outcome enters the window, pushing out the oldest once `window` are
        in (a change of `window` starts an empty one); with at least `min_calls` in it,
        a failure rate or slow rate at or above its threshold opens the breaker for
        `open_for`. Half-open: a probe's outcome; once `half_open_probes` are in, their
        failure and slow rates against the same thresholds decide: open again for
        `open_for`, or closed with an empty window.
        """

    @abstractmethod
    async def breaker_release(self, key: str, admission: Admission) -> None:
        """The call `admission` let through ended with no outcome to count: a probe
        gives its place back to the next call. Does nothing for a call admitted while
        closed, or in an episode that has ended.

        Each admitted call ends in exactly one breaker_record or breaker_release: the
        breaker counts probes out, it does not name them.
        """

    @abstractmethod
    async def breaker_snapshots(self) -> dict[str, BreakerSnapshot]:
        """Every breaker with an outcome recorded, by key. For operators, not for the call
        path (on Redis a SCAN over the breaker keys)."""

    @abstractmethod
    async def close(self) -> None: ...
