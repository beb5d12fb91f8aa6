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
    Admission,
    BreakerSettings,
    BreakerSnapshot,
    BreakerState,
    Counters,
    CounterValue,
    Hold,
    Refusal,
    Reservation,
    check_units,
)

# Keys below this many are never pruned: a sweep would cost more than they do.
_PRUNE_FLOOR = 1024
# A breaker's ring holds one byte per outcome: these flags.
_FAILED, _SLOW = 1, 2


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


class _Breaker:
    """One breaker: its state and episode, and running counts over its outcomes.

    Closed, the counts cover the ring of the last `window` outcomes; half-open, the
    probes' outcomes (the ring waits, to be emptied on closing); open, they keep the
    figures that opened it, for operators.
    """

    __slots__ = (
        "calls",
        "failures",
        "generation",
        "head",
        "last_probe_at",
        "open_until",
        "opened_at",
        "probes_out",
        "ring",
        "slow",
        "state",
    )

    def __init__(self, window: int) -> None:
        self.state = BreakerState.CLOSED
        self.generation = 0
        self.ring = bytearray(window)
        self.head = 0
        self.calls = self.failures = self.slow = 0
        self.probes_out = 0
        self.last_probe_at = 0.0
        self.opened_at = self.open_until = 0.0  # of the latest opening

    def count(self, flags: int) -> None:
        self.calls += 1
        self.failures += flags & _FAILED
        self.slow += (flags & _SLOW) >> 1

    def push(self, flags: int) -> None:
        """Add an outcome to the window, pushing out the oldest once it is full."""
        if self.calls == len(self.ring):
            old = self.ring[self.head]
            self.calls -= 1
            self.failures -= old & _FAILED
            self.slow -= (old & _SLOW) >> 1
        self.ring[self.head] = flags
        self.head = (self.head + 1) % len(self.ring)
        self.count(flags)

    def empty(self, window: int) -> None:
        self.ring = bytearray(window)
        self.head = 0
        self.calls = self.failures = self.slow = 0

    def tripped(self, settings: BreakerSettings) -> bool:
        # Division, not failures >= rate * calls: 0.1 * 30 is a hair over 3 in floats.
        return (
            self.failures / self.calls >= settings.failure_rate
            or self.slow / self.calls >= settings.slow_rate
        )

    def open(self, now: float, settings: BreakerSettings) -> None:
        self.state = BreakerState.OPEN
        self.generation += 1
        self.probes_out = 0
        self.opened_at = now
        self.open_until = now + settings.open_for

    def half_open(self, now: float) -> None:
        self.state = BreakerState.HALF_OPEN
        self.generation += 1
        self.calls = self.failures = self.slow = 0
        self.probes_out = 0
        self.last_probe_at = now

    def close(self, window: int) -> None:
        self.state = BreakerState.CLOSED
        self.generation += 1
        self.empty(window)
        self.probes_out = 0

    def snapshot(self) -> BreakerSnapshot:
        closed = self.state is BreakerState.CLOSED
        return BreakerSnapshot(
            self.state,
            self.generation,
            self.calls,
            self.failures,
            self.slow,
            self.probes_out,
            None if closed else self.opened_at,
            None if closed else self.open_until,
        )


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
        self._breakers: dict[str, _Breaker] = {}
        # Unsettled reservations: the amounts held and the counters they were held
        # on. Settling pops the entry, which is what makes a second settle a no-op.
        # A counter with holds is never dropped, so these objects stay the live ones.
        self._open: dict[str, tuple[tuple[int, ...], tuple[_Counter, ...]]] = {}
        # Expiry is lazy (see _current), so a windowed key nobody touches again would stay:
        # once the keys double, the expired ones go (amortized O(1) per new key).
        self._prune_at = _PRUNE_FLOOR
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
            self._prune(now)
        return counter

    def _prune(self, now: float) -> None:
        """Drop the expired keys nothing holds on, when the keys have doubled since last."""
        counters = self._counters
        if len(counters) < self._prune_at:
            return
        for key in [k for k, c in counters.items() if not c.held and c.expired(now)]:
            del counters[key]
        self._prune_at = max(_PRUNE_FLOOR, 2 * len(counters))

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
            if None in found:
                self._prune(now)
            reservation_id = f"{self._prefix}-{next(self._ids)}"
            self._open[reservation_id] = (tuple(h.amount for h in holds), tuple(counters))
        return Reservation(reservation_id, tuple((hold.key, hold.amount) for hold in holds))

    async def commit(self, reservation: Reservation, actual: Sequence[int]) -> None:
        if len(actual) != len(reservation.holds):
            raise ValueError(
                f"commit {reservation.id}: {len(actual)} actual amounts"
                f" for {len(reservation.holds)} holds"
            )
        if any(type(amount) is not int or amount < 0 for amount in actual):  # rare: name it
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

    async def drop(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                counter = self._counters.get(key)
                if counter is not None and not counter.held:
                    del self._counters[key]

    def __len__(self) -> int:
        """Counter keys held (not buckets or breakers): what finished runs must not leave."""
        return len(self._counters)

    async def get(self, key: str) -> CounterValue:
        with self._lock:
            counter = self._current(key, self._wall_clock())
            return (
                CounterValue(0, 0) if counter is None else CounterValue(counter.used, counter.held)
            )

    async def get_many(self, keys: Sequence[str]) -> list[CounterValue]:
        with self._lock:
            now = self._wall_clock()
            found = [self._current(key, now) for key in keys]
        return [CounterValue(0, 0) if c is None else CounterValue(c.used, c.held) for c in found]

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

    async def give(self, key: str, amount: float, capacity: float) -> None:
        if not amount >= 0:
            raise ValueError(f"give {key!r}: amount must be >= 0, got {amount}")
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is not None:
                bucket.tokens = min(capacity, bucket.tokens + amount)

    async def breaker_admit(self, key: str, now: float, settings: BreakerSettings) -> Admission:
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                return Admission(True, BreakerState.CLOSED, 0)
            changed = False
            if breaker.state is BreakerState.OPEN and now >= breaker.open_until:
                breaker.half_open(now)
                changed = True
            elif (
                breaker.state is BreakerState.HALF_OPEN
                and breaker.probes_out
                and now - breaker.last_probe_at >= settings.probe_silence
            ):
                breaker.open(now, settings)
                changed = True
            state, generation = breaker.state, breaker.generation
            if state is BreakerState.CLOSED:
                return Admission(True, state, generation)
            if state is BreakerState.OPEN:
                return Admission(False, state, generation, breaker.open_until - now, changed)
            if breaker.probes_out + breaker.calls < settings.half_open_probes:
                breaker.probes_out += 1
                breaker.last_probe_at = now
                return Admission(True, state, generation, 0.0, changed)
            return Admission(False, state, generation, 0.0, changed)

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
        flags = (_FAILED if failed else 0) | (_SLOW if slow else 0)
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None and admission.generation == 0:
                breaker = self._breakers[key] = _Breaker(settings.window)
            if (
                breaker is None
                or not admission.admitted
                or admission.generation != breaker.generation
            ):
                return None
            if breaker.state is BreakerState.CLOSED:
                if len(breaker.ring) != settings.window:
                    breaker.empty(settings.window)
                breaker.push(flags)
                if breaker.calls < settings.min_calls or not breaker.tripped(settings):
                    return None
                breaker.open(now, settings)
                return breaker.snapshot()
            # Half-open: an open episode admits nothing, so no admission can name it.
            breaker.probes_out = max(0, breaker.probes_out - 1)
            breaker.last_probe_at = now
            breaker.count(flags)
            if breaker.calls < settings.half_open_probes:
                return None
            if breaker.tripped(settings):
                breaker.open(now, settings)
            else:
                breaker.close(settings.window)
            return breaker.snapshot()

    async def breaker_release(self, key: str, admission: Admission) -> None:
        with self._lock:
            breaker = self._breakers.get(key)
            if (
                breaker is not None
                and admission.state is BreakerState.HALF_OPEN
                and admission.generation == breaker.generation
                and breaker.probes_out
            ):
                breaker.probes_out -= 1

    async def breaker_snapshots(self) -> dict[str, BreakerSnapshot]:
        with self._lock:
            return {key: breaker.snapshot() for key, breaker in self._breakers.items()}

    async def close(self) -> None:
        """Nothing to release: the counters live and die with the process."""
