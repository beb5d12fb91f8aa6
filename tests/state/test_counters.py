"""The Counters contract: exact admission under concurrency, all-or-none, idempotent settle."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from corral.state import (
    Counters,
    CounterValue,
    Hold,
    MemoryCounters,
    Refusal,
    Reservation,
    open_counters,
)
from corral.state.counters import Admission, BreakerSettings, BreakerSnapshot, BreakerState
from tests.state.conftest import FakeClock


async def reserved(counters: Counters, *holds: Hold) -> Reservation:
    outcome = await counters.reserve(holds)
    assert isinstance(outcome, Reservation), outcome
    return outcome


async def test_concurrent_reservations_admit_exactly_the_limit(counters: Counters) -> None:
    outcomes = await asyncio.gather(*(counters.reserve([Hold("k", 1, 100)]) for _ in range(1000)))
    assert sum(isinstance(o, Reservation) for o in outcomes) == 100
    assert await counters.get("k") == CounterValue(used=0, held=100)


async def test_reservations_from_many_threads_never_cross_the_limit(counters: Counters) -> None:
    threads, per_thread = 8, 250
    start = threading.Barrier(threads)

    async def attempts() -> int:
        admitted = 0
        for _ in range(per_thread):
            outcome = await counters.reserve([Hold("k", 1, 100)])
            admitted += isinstance(outcome, Reservation)
        return admitted

    def in_thread() -> int:
        start.wait()
        return asyncio.run(attempts())

    def run_all() -> list[int]:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda _: in_thread(), range(threads)))

    admitted = await asyncio.to_thread(run_all)
    assert sum(admitted) == 100
    assert await counters.get("k") == CounterValue(used=0, held=100)


async def test_reserve_is_all_or_none_across_keys(counters: Counters) -> None:
    await counters.add("session", 10)
    outcome = await counters.reserve([Hold("task", 5, 100), Hold("session", 1, 10)])
    assert outcome == Refusal(key="session", limit=10, used=10, held=0, amount=1)
    assert await counters.get("task") == CounterValue(0, 0)


async def test_refusal_names_the_key_and_its_numbers(counters: Counters) -> None:
    await counters.add("usd", 7)
    await reserved(counters, Hold("usd", 2, 10))
    assert await reserved(counters, Hold("usd", 1, 10))  # exactly at the limit is admitted
    outcome = await counters.reserve([Hold("usd", 1, 10)])
    assert outcome == Refusal(key="usd", limit=10, used=7, held=3, amount=1)


async def test_commit_moves_held_to_actual_used(counters: Counters) -> None:
    less = await reserved(counters, Hold("a", 10, 100), Hold("b", 10, 100))
    await counters.commit(less, [4, 0])
    assert await counters.get("a") == CounterValue(4, 0)
    assert await counters.get("b") == CounterValue(0, 0)

    # More than held is recorded as it happened; the next hold sees it.
    more = await reserved(counters, Hold("a", 10, 100))
    await counters.commit(more, [90])
    assert await counters.get("a") == CounterValue(94, 0)
    assert await counters.reserve([Hold("a", 7, 100)]) == Refusal("a", 100, 94, 0, 7)


async def test_release_frees_the_hold(counters: Counters) -> None:
    held = await reserved(counters, Hold("k", 10, 10))
    assert isinstance(await counters.reserve([Hold("k", 1, 10)]), Refusal)
    await counters.release(held)
    assert await counters.get("k") == CounterValue(0, 0)
    assert isinstance(await counters.reserve([Hold("k", 10, 10)]), Reservation)


async def test_settling_twice_counts_once(counters: Counters) -> None:
    first = await reserved(counters, Hold("k", 5, 100))
    await counters.commit(first, [3])
    await counters.commit(first, [3])
    await counters.release(first)
    assert await counters.get("k") == CounterValue(3, 0)

    second = await reserved(counters, Hold("k", 5, 100))
    await counters.release(second)
    await counters.release(second)
    await counters.commit(second, [5])
    assert await counters.get("k") == CounterValue(3, 0)


async def test_settling_an_unknown_reservation_does_nothing(counters: Counters) -> None:
    await reserved(counters, Hold("k", 5, 100))
    stranger = Reservation(id="not-issued-here", holds=(("k", 5),))
    await counters.commit(stranger, [5])
    await counters.release(stranger)
    assert await counters.get("k") == CounterValue(0, 5)


async def test_commit_with_the_wrong_number_of_amounts_keeps_the_hold(counters: Counters) -> None:
    held = await reserved(counters, Hold("a", 5, 100), Hold("b", 5, 100))
    with pytest.raises(ValueError, match="1 actual amounts for 2 holds"):
        await counters.commit(held, [5])
    assert await counters.get("a") == CounterValue(0, 5)
    await counters.release(held)
    assert await counters.get("a") == CounterValue(0, 0)


async def test_negative_or_fractional_amounts_are_rejected(counters: Counters) -> None:
    with pytest.raises(ValueError, match="amount must be a non-negative int, got -1"):
        Hold("k", -1, 10)
    with pytest.raises(ValueError, match="limit must be a non-negative int"):
        Hold("k", 1, -10)
    with pytest.raises(ValueError, match=r"non-negative int, got 1\.5"):
        Hold("k", 1.5, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative int"):
        await counters.add("k", -1)
    held = await reserved(counters, Hold("k", 5, 10))
    with pytest.raises(ValueError, match="non-negative int"):
        await counters.commit(held, [-1])
    assert await counters.get("k") == CounterValue(0, 5)


async def test_repeated_keys_in_one_reservation_are_rejected(counters: Counters) -> None:
    with pytest.raises(ValueError, match="keys must be distinct"):
        await counters.reserve([Hold("k", 1, 10), Hold("k", 1, 20)])


async def test_add_returns_the_new_total(counters: Counters) -> None:
    assert await counters.add("calls", 1) == 1
    assert await counters.add("calls", 2) == 3
    assert await counters.get("calls") == CounterValue(3, 0)
    assert await counters.get("never-written") == CounterValue(0, 0)


async def test_keys_expire_after_their_ttl(counters: Counters, clock: FakeClock) -> None:
    await counters.add("day", 5, ttl=10)
    clock.advance(5)
    await counters.add("day", 1, ttl=10)  # the window is fixed by the first write
    clock.advance(4.9)
    assert await counters.get("day") == CounterValue(6, 0)
    clock.advance(0.1)
    assert await counters.get("day") == CounterValue(0, 0)


async def test_an_expired_window_admits_again(counters: Counters, clock: FakeClock) -> None:
    spent = await reserved(counters, Hold("day", 10, 10, ttl=60))
    await counters.commit(spent, [10])
    assert isinstance(await counters.reserve([Hold("day", 1, 10, ttl=60)]), Refusal)
    clock.advance(60)
    assert isinstance(await counters.reserve([Hold("day", 1, 10, ttl=60)]), Reservation)


async def test_holds_in_flight_carry_into_the_next_window(
    counters: Counters, clock: FakeClock
) -> None:
    held = await reserved(counters, Hold("day", 8, 10, ttl=60))
    clock.advance(61)
    # The call still running will settle into this window, so its hold takes room here.
    assert await counters.reserve([Hold("day", 3, 10, ttl=60)]) == Refusal("day", 10, 0, 8, 3)
    await counters.commit(held, [7])
    assert await counters.get("day") == CounterValue(7, 0)
    clock.advance(60)
    assert await counters.get("day") == CounterValue(0, 0)


async def test_bucket_starts_full_and_refills(counters: Counters, clock: FakeClock) -> None:
    assert await counters.take("rpm", 10, rate=2, capacity=10) == 0.0
    assert await counters.take("rpm", 1, rate=2, capacity=10) == pytest.approx(0.5)
    clock.advance(0.5)
    assert await counters.take("rpm", 1, rate=2, capacity=10) == 0.0
    # A refused take takes nothing: 4 tokens need 2 s, and after 1 s, 1 s more.
    assert await counters.take("rpm", 4, rate=2, capacity=10) == pytest.approx(2.0)
    clock.advance(1)
    assert await counters.take("rpm", 4, rate=2, capacity=10) == pytest.approx(1.0)
    clock.advance(1)
    assert await counters.take("rpm", 4, rate=2, capacity=10) == 0.0


async def test_bucket_never_fills_past_capacity(counters: Counters, clock: FakeClock) -> None:
    assert await counters.take("tpm", 5, rate=1, capacity=5) == 0.0
    clock.advance(3600)
    assert await counters.take("tpm", 5, rate=1, capacity=5) == 0.0
    assert await counters.take("tpm", 1, rate=1, capacity=5) == pytest.approx(1.0)


async def test_buckets_are_apart_from_counters(counters: Counters) -> None:
    await counters.add("k", 3)
    assert await counters.take("k", 1, rate=1, capacity=1) == 0.0
    assert await counters.get("k") == CounterValue(3, 0)


async def test_bucket_rejects_what_it_could_never_serve(counters: Counters) -> None:
    with pytest.raises(ValueError, match="amount must be in"):
        await counters.take("k", 11, rate=1, capacity=10)
    with pytest.raises(ValueError, match="amount must be in"):
        await counters.take("k", -1, rate=1, capacity=10)
    with pytest.raises(ValueError, match="rate and capacity must be > 0"):
        await counters.take("k", 1, rate=0, capacity=10)


def test_open_counters_builds_memory_and_names_what_it_cannot() -> None:
    assert isinstance(open_counters("memory"), MemoryCounters)
    with pytest.raises(ValueError, match="'memcached://localhost:11211'"):
        open_counters("memcached://localhost:11211")


# --- circuit breakers -------------------------------------------------------------

BREAKER = BreakerSettings(
    window=4,
    min_calls=3,
    failure_rate=0.5,
    slow_rate=0.75,
    open_for=30.0,
    half_open_probes=2,
    probe_silence=60.0,
)


async def outcome(
    counters: Counters,
    clock: FakeClock,
    *,
    failed: bool = False,
    slow: bool = False,
    key: str = "breaker:p:m",
    settings: BreakerSettings = BREAKER,
) -> BreakerSnapshot | None:
    """One call through the breaker: admitted (it must be), then its outcome counted."""
    admission = await counters.breaker_admit(key, clock(), settings)
    assert admission.admitted, admission
    return await counters.breaker_record(
        key, admission, failed=failed, slow=slow, now=clock(), settings=settings
    )


async def snapshot(counters: Counters, key: str = "breaker:p:m") -> BreakerSnapshot:
    return (await counters.breaker_snapshots())[key]


async def opened(counters: Counters, clock: FakeClock, key: str = "breaker:p:m") -> None:
    for _ in range(BREAKER.min_calls):
        await outcome(counters, clock, failed=True, key=key)
    assert (await snapshot(counters, key)).state is BreakerState.OPEN


async def test_an_unknown_breaker_is_closed_and_admitting_writes_nothing(
    counters: Counters, clock: FakeClock
) -> None:
    admission = await counters.breaker_admit("breaker:p:m", clock(), BREAKER)
    assert admission == Admission(True, BreakerState.CLOSED, 0)
    assert await counters.breaker_snapshots() == {}


async def test_breaker_opens_at_the_failure_rate_once_min_calls_are_in(
    counters: Counters, clock: FakeClock
) -> None:
    assert await outcome(counters, clock, failed=True) is None
    assert await outcome(counters, clock, failed=True) is None  # 2 of 2 failed, below min_calls
    changed = await outcome(counters, clock, failed=False)  # 2 of 3 = 0.67 >= 0.5
    assert changed is not None and changed.state is BreakerState.OPEN
    assert (changed.calls, changed.failures, changed.slow) == (3, 2, 0)
    assert changed.opened_at == clock() and changed.open_until == clock() + 30
    assert await snapshot(counters) == changed


async def test_breaker_opens_exactly_at_the_rate_and_stays_closed_below(
    counters: Counters, clock: FakeClock
) -> None:
    settings = BreakerSettings(10, 10, 0.3, 1.0, 30.0, 1, 60.0)
    for failed in [False] * 8 + [True, True]:  # 0.2 < 0.3
        assert await outcome(counters, clock, failed=failed, settings=settings) is None
    assert (await snapshot(counters)).state is BreakerState.CLOSED
    # The window slides: the oldest success out, a failure in: 3 of 10 reaches 0.3.
    changed = await outcome(counters, clock, failed=True, settings=settings)
    assert changed is not None and (changed.calls, changed.failures) == (10, 3)


async def test_breaker_window_keeps_only_the_last_outcomes(
    counters: Counters, clock: FakeClock
) -> None:
    await outcome(counters, clock, failed=True)
    for _ in range(4):
        assert await outcome(counters, clock) is None
    got = await snapshot(counters)
    assert (got.state, got.calls, got.failures, got.failure_rate) == (BreakerState.CLOSED, 4, 0, 0)
    # One failure, and then another: 2 of the last 4, which opens it.
    assert await outcome(counters, clock, failed=True) is None
    changed = await outcome(counters, clock, failed=True)
    assert changed is not None and (changed.calls, changed.failures) == (4, 2)


async def test_breaker_opens_on_the_slow_call_rate(counters: Counters, clock: FakeClock) -> None:
    for slow in (True, False, True):  # 2 of 3 slow: below 0.75
        assert await outcome(counters, clock, slow=slow) is None
    changed = await outcome(counters, clock, slow=True)  # 3 of 4 slow
    assert changed is not None and changed.state is BreakerState.OPEN
    assert (changed.failures, changed.slow, changed.slow_rate) == (0, 3, 0.75)


async def test_open_breaker_refuses_with_the_seconds_until_half_open(
    counters: Counters, clock: FakeClock
) -> None:
    await opened(counters, clock)
    generation = (await snapshot(counters)).generation
    clock.advance(10)
    refused = await counters.breaker_admit("breaker:p:m", clock(), BREAKER)
    assert refused == Admission(False, BreakerState.OPEN, generation, retry_in=20.0)
    # A refused admission counts nothing.
    assert (
        await counters.breaker_record(
            "breaker:p:m", refused, failed=True, slow=False, now=clock(), settings=BREAKER
        )
        is None
    )
    assert (await snapshot(counters)).calls == 3


async def test_half_open_admits_exactly_the_probes_then_refuses(
    counters: Counters, clock: FakeClock
) -> None:
    await opened(counters, clock)
    clock.advance(30)
    admissions = await asyncio.gather(
        *(counters.breaker_admit("breaker:p:m", clock(), BREAKER) for _ in range(10))
    )
    admitted = [a for a in admissions if a.admitted]
    assert len(admitted) == 2
    assert all(a.state is BreakerState.HALF_OPEN for a in admissions)
    assert sum(a.changed for a in admissions) == 1  # the one that half-opened it
    refused = next(a for a in admissions if not a.admitted)
    assert refused.retry_in == 0.0
    got = await snapshot(counters)
    assert (got.state, got.probes_out, got.calls) == (BreakerState.HALF_OPEN, 2, 0)


async def test_probes_that_succeed_close_the_breaker_with_a_fresh_window(
    counters: Counters, clock: FakeClock
) -> None:
    await opened(counters, clock)
    clock.advance(30)
    probes = [await counters.breaker_admit("breaker:p:m", clock(), BREAKER) for _ in range(2)]
    first = await counters.breaker_record(
        "breaker:p:m", probes[0], failed=False, slow=False, now=clock(), settings=BREAKER
    )
    assert first is None  # one of two probes: no decision yet
    closed = await counters.breaker_record(
        "breaker:p:m", probes[1], failed=False, slow=False, now=clock(), settings=BREAKER
    )
    assert closed is not None and closed.state is BreakerState.CLOSED
    assert (closed.calls, closed.failures, closed.probes_out, closed.opened_at) == (0, 0, 0, None)
    # A fresh window: two failures are below min_calls again.
    assert await outcome(counters, clock, failed=True) is None
    assert await outcome(counters, clock, failed=True) is None


async def test_probes_at_the_failure_rate_open_the_breaker_again(
    counters: Counters, clock: FakeClock
) -> None:
    await opened(counters, clock)
    clock.advance(30)
    probes = [await counters.breaker_admit("breaker:p:m", clock(), BREAKER) for _ in range(2)]
    await counters.breaker_record(
        "breaker:p:m", probes[0], failed=False, slow=False, now=clock(), settings=BREAKER
    )
    clock.advance(1)
    again = await counters.breaker_record(
        "breaker:p:m", probes[1], failed=True, slow=False, now=clock(), settings=BREAKER
    )  # 1 of 2 probes failed: 0.5 reaches failure_rate
    assert again is not None and again.state is BreakerState.OPEN
    assert (again.calls, again.failures) == (2, 1)
    assert again.opened_at == clock() and again.open_until == clock() + 30
    refused = await counters.breaker_admit("breaker:p:m", clock(), BREAKER)
    assert not refused.admitted and refused.retry_in == 30.0


async def test_a_late_outcome_from_an_earlier_episode_is_dropped(
    counters: Counters, clock: FakeClock
) -> None:
    before = await counters.breaker_admit("breaker:p:m", clock(), BREAKER)  # still closed
    await opened(counters, clock)
    clock.advance(30)
    probe = await counters.breaker_admit("breaker:p:m", clock(), BREAKER)
    assert probe.admitted and probe.generation != before.generation
    # The call admitted while closed answers now: it is no probe, and counts nowhere.
    assert (
        await counters.breaker_record(
            "breaker:p:m", before, failed=False, slow=False, now=clock(), settings=BREAKER
        )
        is None
    )
    got = await snapshot(counters)
    assert (got.state, got.calls, got.probes_out) == (BreakerState.HALF_OPEN, 0, 1)
    await counters.breaker_release("breaker:p:m", before)  # nor does its release
    assert (await snapshot(counters)).probes_out == 1


async def test_a_released_probe_gives_its_place_back(counters: Counters, clock: FakeClock) -> None:
    await opened(counters, clock)
    clock.advance(30)
    probes = [await counters.breaker_admit("breaker:p:m", clock(), BREAKER) for _ in range(2)]
    assert not (await counters.breaker_admit("breaker:p:m", clock(), BREAKER)).admitted
    await counters.breaker_release("breaker:p:m", probes[0])
    assert (await snapshot(counters)).probes_out == 1
    assert (await counters.breaker_admit("breaker:p:m", clock(), BREAKER)).admitted
    assert not (await counters.breaker_admit("breaker:p:m", clock(), BREAKER)).admitted


async def test_a_release_while_closed_changes_nothing(counters: Counters, clock: FakeClock) -> None:
    await outcome(counters, clock, failed=True)
    admission = await counters.breaker_admit("breaker:p:m", clock(), BREAKER)
    await counters.breaker_release("breaker:p:m", admission)
    got = await snapshot(counters)
    assert (got.state, got.calls, got.failures, got.probes_out) == (BreakerState.CLOSED, 1, 1, 0)


async def test_silent_probes_open_the_breaker_again(counters: Counters, clock: FakeClock) -> None:
    await opened(counters, clock)
    clock.advance(30)
    lost = [await counters.breaker_admit("breaker:p:m", clock(), BREAKER) for _ in range(2)]
    clock.advance(59.9)
    assert not (await counters.breaker_admit("breaker:p:m", clock(), BREAKER)).admitted
    clock.advance(0.1)
    reopened = await counters.breaker_admit("breaker:p:m", clock(), BREAKER)
    assert reopened.changed and not reopened.admitted
    assert (reopened.state, reopened.retry_in) == (BreakerState.OPEN, 30.0)
    # The lost probes, should they ever answer, belong to an episode that is over.
    assert (
        await counters.breaker_record(
            "breaker:p:m", lost[0], failed=False, slow=False, now=clock(), settings=BREAKER
        )
        is None
    )
    clock.advance(30)
    assert (await counters.breaker_admit("breaker:p:m", clock(), BREAKER)).admitted


async def test_a_new_window_size_starts_an_empty_window(
    counters: Counters, clock: FakeClock
) -> None:
    await outcome(counters, clock, failed=True)
    await outcome(counters, clock, failed=True)
    wider = BreakerSettings(8, 3, 0.5, 0.75, 30.0, 2, 60.0)
    assert await outcome(counters, clock, settings=wider) is None
    got = await snapshot(counters)
    assert (got.calls, got.failures) == (1, 0)


async def test_breakers_are_apart_from_each_other_and_from_counters(
    counters: Counters, clock: FakeClock
) -> None:
    await counters.add("breaker:p:m", 5)
    await opened(counters, clock, key="breaker:p:m")
    assert (await counters.breaker_admit("breaker:p:other", clock(), BREAKER)).admitted
    assert await counters.get("breaker:p:m") == CounterValue(5, 0)
    assert set(await counters.breaker_snapshots()) == {"breaker:p:m"}


async def test_half_open_probes_across_threads_are_never_more_than_allowed(
    counters: Counters, clock: FakeClock
) -> None:
    await opened(counters, clock)
    clock.advance(30)
    threads = 8
    start = threading.Barrier(threads)

    def in_thread() -> int:
        start.wait()

        async def attempts() -> int:
            admitted = 0
            for _ in range(50):
                admission = await counters.breaker_admit("breaker:p:m", clock(), BREAKER)
                admitted += admission.admitted
            return admitted

        return asyncio.run(attempts())

    def run_all() -> list[int]:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda _: in_thread(), range(threads)))

    assert sum(await asyncio.to_thread(run_all)) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"min_calls": 5}, r"min_calls must be in \[1, window=4\], got 5"),
        ({"min_calls": 0}, "min_calls must be in"),
        ({"half_open_probes": 0}, "half_open_probes must be >= 1"),
        ({"failure_rate": 1.5}, r"failure_rate must be in \[0, 1\]"),
        ({"slow_rate": -0.1}, "slow_rate must be in"),
        ({"open_for": -1.0}, "open_for must be >= 0"),
        ({"probe_silence": float("nan")}, "probe_silence must be >= 0"),
    ],
)
def test_breaker_settings_refuse_what_cannot_work(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(BREAKER, **change)


async def test_give_returns_tokens_up_to_capacity(counters: Counters) -> None:
    assert await counters.take("bucket", 8, rate=0.001, capacity=10) == 0.0
    await counters.give("bucket", 5, capacity=10)
    assert await counters.take("bucket", 7, rate=0.001, capacity=10) == 0.0
    await counters.give("bucket", 100, capacity=10)  # never past capacity
    assert await counters.take("bucket", 10, rate=0.001, capacity=10) == 0.0
    assert await counters.take("bucket", 1, rate=0.001, capacity=10) > 0


async def test_give_to_an_unknown_bucket_does_nothing(counters: Counters) -> None:
    await counters.give("never-taken", 5, capacity=10)
    assert await counters.take("never-taken", 10, rate=0.001, capacity=10) == 0.0
    with pytest.raises(ValueError, match="amount must be >= 0"):
        await counters.give("never-taken", -1, capacity=10)


async def test_keys_of_windows_that_passed_do_not_pile_up() -> None:
    now = [0.0]
    counters = MemoryCounters(wall_clock=lambda: now[0])
    for window in range(10_000):  # a new key per window, as windowed budgets make
        now[0] = float(window)
        await counters.add(f"retry:sim:calls:{window}", 1, ttl=2.0)
    assert len(counters) <= 2 * 1024  # pruned as they doubled, not 10,000 of them
    assert (await counters.get("retry:sim:calls:9999")).used == 1  # the live one stays


async def test_a_key_with_amounts_held_is_never_pruned() -> None:
    now = [0.0]
    counters = MemoryCounters(wall_clock=lambda: now[0])
    got = await counters.reserve([Hold("held", 5, 10, ttl=1.0)])
    assert isinstance(got, Reservation)
    for n in range(3000):
        now[0] = 10.0 + n
        await counters.add(f"k{n}", 1, ttl=0.5)
    await counters.commit(got, [3])
    assert (await counters.get("held")) == (3, 0)
