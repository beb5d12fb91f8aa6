"""MemoryCounters: Counters in this process, for one node.

One threading.Lock guards everything, since the sync SDK facade calls in from
other threads; no critical section awaits or does I/O, so each operation is atomic
and holds the lock for a few microseconds.
"""

from __future__ import annotations

import itertools
import math
import secrets
import threading
import time
from collections.abc import Callable, Sequence

from corral.state.counters import (
    Counters,
    CounterValue,
    Hold,
    Refusal,
    Reservation,
    check_units,
)


class _Counter:
    """One key: settled usage, amounts held in flight, and its window (endless without ttl)."""

    __slots__ = ("expires_at", "held", "ttl", "used")

    def __init__(self, ttl: float | None, now: float) -> None:
        self.used = 0
        self.held = 0
        self.ttl = math.inf if ttl is None else ttl
        self.expires_at = now + self.ttl

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def roll(self, now: float) -> None:
        """Start the next window. Holds carry over: the calls in flight will settle
        into the new window, so they must take room in it, or a cap could be crossed
        at the window's edge."""
        self.used = 0
        self.expires_at = now + self.ttl


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class MemoryCounters(Counters):
    """Counters in dicts. `clock` drives token buckets, `wall_clock` key expiry."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._counters: dict[str, _Counter] = {}
        self._buckets: dict[str, _Bucket] = {}
        # Unsettled reservations: the amounts held and the counters they were held
        # on. Settling pops the entry, which is what makes a second settle a no-op.
        # A counter with holds is never dropped, so these objects stay the live ones.
        self._open: dict[str, tuple[tuple[int, ...], tuple[_Counter, ...]]] = {}
        # The prefix keeps a reservation from another instance from matching one here.
        self._prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)

    def _current(self, key: str, now: float) -> _Counter | None:
        # Expiry is lazy: a key past its window is dropped, or rolled over if calls
        # still hold on it, when next touched.
        counter = self._counters.get(key)
        if counter is not None and counter.expired(now):
            if not counter.held:
                del self._counters[key]
                return None
            counter.roll(now)
        return counter

    def _current_or_new(self, key: str, ttl: float | None, now: float) -> _Counter:
        counter = self._current(key, now)
        if counter is None:
            counter = self._counters[key] = _Counter(ttl, now)
        return counter

    async def reserve(self, holds: Sequence[Hold]) -> Reservation | Refusal:
        if len({hold.key for hold in holds}) != len(holds):
            raise ValueError(f"reserve: keys must be distinct, got {[h.key for h in holds]}")
        with self._lock:
            now = self._wall_clock()
            found: list[_Counter | None] = []
            for hold in holds:
                counter = self._current(hold.key, now)
                used, held = (0, 0) if counter is None else (counter.used, counter.held)
                if used + held + hold.amount > hold.limit:
                    return Refusal(hold.key, hold.limit, used, held, hold.amount)
                found.append(counter)
            counters = []
            for hold, maybe in zip(holds, found, strict=True):
                counter = self._counters[hold.key] = maybe or _Counter(hold.ttl, now)
                counter.held += hold.amount
                counters.append(counter)
            reservation_id = f"{self._prefix}-{next(self._ids)}"
            self._open[reservation_id] = (tuple(h.amount for h in holds), tuple(counters))
        return Reservation(reservation_id, tuple((hold.key, hold.amount) for hold in holds))

    async def commit(self, reservation: Reservation, actual: Sequence[int]) -> None:
        if len(actual) != len(reservation.holds):
            raise ValueError(
                f"commit {reservation.id}: {len(actual)} actual amounts"
                f" for {len(reservation.holds)} holds"
            )
        for (key, _), amount in zip(reservation.holds, actual, strict=True):
            check_units(f"commit {reservation.id} actual for {key!r}", amount)
        with self._lock:
            settled = self._open.pop(reservation.id, None)
            if settled is None:
                return
            held, counters = settled
            now = self._wall_clock()
            for amount_held, counter, amount in zip(held, counters, actual, strict=True):
                # Usage lands in the window current now, not the one the hold began in.
                if counter.expired(now):
                    counter.roll(now)
                counter.held -= amount_held
                counter.used += amount

    async def release(self, reservation: Reservation) -> None:
        with self._lock:
            settled = self._open.pop(reservation.id, None)
            if settled is None:
                return
            held, counters = settled
            for amount_held, counter in zip(held, counters, strict=True):
                counter.held -= amount_held

    async def add(self, key: str, amount: int, ttl: float | None = None) -> int:
        check_units(f"add {key!r} amount", amount)
        with self._lock:
            counter = self._current_or_new(key, ttl, self._wall_clock())
            counter.used += amount
            return counter.used

    async def get(self, key: str) -> CounterValue:
        with self._lock:
            counter = self._current(key, self._wall_clock())
            return (
                CounterValue(0, 0) if counter is None else CounterValue(counter.used, counter.held)
            )

    async def take(self, key: str, amount: float, rate: float, capacity: float) -> float:
        if not rate > 0 or not capacity > 0:
            raise ValueError(f"take {key!r}: rate and capacity must be > 0, got {rate}, {capacity}")
        if not 0 <= amount <= capacity:
            raise ValueError(f"take {key!r}: amount must be in [0, {capacity}], got {amount}")
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(capacity, now)
            else:
                bucket.tokens = min(capacity, bucket.tokens + (now - bucket.at) * rate)
                bucket.at = now
            if bucket.tokens >= amount:
                bucket.tokens -= amount
                return 0.0
            return (amount - bucket.tokens) / rate

    async def close(self) -> None:
        """Nothing to release: the counters live and die with the process."""
