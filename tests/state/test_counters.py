"""The Counters contract: exact admission under concurrency, all-or-none, idempotent settle."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

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
    with pytest.raises(ValueError, match="'redis://localhost:6379/0'"):
        open_counters("redis://localhost:6379/0")
