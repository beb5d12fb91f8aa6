"""What only shared counters must do: exact caps across OS processes, leases that charge a
dead or cut-off holder its worst case (and never twice), failing closed without Redis.

Real Redis at redis_backend.REDIS_URL, no mocks; a partition is a TCP proxy in front of
it that the test cuts and heals.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import signal
import socket
import time
from collections.abc import AsyncIterator
from multiprocessing.synchronize import Barrier
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from corral.state import (
    Counters,
    CountersUnavailable,
    CounterValue,
    Hold,
    MemoryCounters,
    Refusal,
    Reservation,
    open_counters,
)
from corral.state.counters import Admission, BreakerSettings
from corral.state.redis import RedisCounters
from tests.state.conftest import FakeClock
from tests.support import TcpProxy

from .redis_backend import REDIS_URL, fresh_prefix, purge, redis_counters, require_redis

SPAWN = multiprocessing.get_context("spawn")
SHORT_LEASE = 0.5


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    require_redis()
    name = fresh_prefix()
    yield name
    await purge(name)


async def eventually(check: Any, what: str, within: float = 10.0) -> None:
    """Poll an async check until it holds (leases run on the server's real clock)."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.05)


# --- exact caps across processes --------------------------------------------------


def _reserve_in_process(prefix: str, attempts: int, start: Barrier, out: Any) -> None:
    async def attempt_all() -> int:
        counters = RedisCounters(REDIS_URL, prefix=prefix)
        try:
            await counters.get("fleet")  # connected before the start, so all race at once
            start.wait()
            task = f"task:{os.getpid()}"
            outcomes = await asyncio.gather(
                *(
                    counters.reserve(
                        [Hold(task, 1, 1000), Hold("session", 1, 1000), Hold("fleet", 1, 100)]
                    )
                    for _ in range(attempts)
                )
            )
            return sum(isinstance(o, Reservation) for o in outcomes)
        finally:
            await counters.close()

    out.put((os.getpid(), asyncio.run(attempt_all())))


async def test_reservations_from_several_processes_admit_exactly_the_cap(prefix: str) -> None:
    processes, per_process = 4, 250  # 1,000 reservations against a fleet cap of 100
    start, out = SPAWN.Barrier(processes), SPAWN.Queue()
    workers = [
        SPAWN.Process(target=_reserve_in_process, args=(prefix, per_process, start, out))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    admitted = dict(await asyncio.to_thread(lambda: [out.get(timeout=120) for _ in workers]))
    for worker in workers:
        await asyncio.to_thread(worker.join, 30)
        assert worker.exitcode == 0
    assert sum(admitted.values()) == 100
    counters = redis_counters(FakeClock(time.time()), prefix=prefix)
    try:
        assert await counters.get("fleet") == CounterValue(0, 100)
        # All or none: every admitted reservation holds at every level, no refused one does.
        assert await counters.get("session") == CounterValue(0, 100)
        tasks = await counters.get_many([f"task:{pid}" for pid in admitted])
        assert [value.held for value in tasks] == list(admitted.values())
    finally:
        await counters.close()


# --- leases -----------------------------------------------------------------------


def _hold_and_die(prefix: str, out: Any) -> None:
    async def hold() -> str:
        counters = RedisCounters(REDIS_URL, prefix=prefix, lease=SHORT_LEASE)
        got = await counters.reserve([Hold("k", 7, 100), Hold("day", 7, 100, ttl=3600)])
        assert isinstance(got, Reservation)
        return got.id

    out.send(asyncio.run(hold()))  # a pipe's send is written before it returns
    os.kill(os.getpid(), signal.SIGKILL)  # no settle, no close: a crash


async def test_a_dead_holder_is_charged_its_worst_case_when_its_lease_runs_out(
    prefix: str,
) -> None:
    receiver, sender = SPAWN.Pipe(duplex=False)
    holder = SPAWN.Process(target=_hold_and_die, args=(prefix, sender))
    holder.start()
    assert await asyncio.to_thread(receiver.poll, 60), "the holder never reserved"
    reservation_id = receiver.recv()
    await asyncio.to_thread(holder.join, 30)
    assert holder.exitcode == -signal.SIGKILL
    counters = redis_counters(FakeClock(time.time()), prefix=prefix)
    try:
        # Held or charged, the 7 always take room: 94 more never fit under 100.
        assert not isinstance(await counters.reserve([Hold("k", 94, 100)]), Reservation)

        async def charged() -> bool:
            return await counters.get_many(["k", "day"]) == [(7, 0), (7, 0)]

        await eventually(charged, "the dead holder's 7 charged as used")
        # Never refunded: settling the dead holder's reservation afterwards changes nothing.
        dead = Reservation(reservation_id, (("k", 7), ("day", 7)))
        await counters.release(dead)
        await counters.commit(dead, [0, 0])
        assert await counters.get_many(["k", "day"]) == [(7, 0), (7, 0)]
        assert not isinstance(await counters.reserve([Hold("k", 94, 100)]), Reservation)
        assert isinstance(await counters.reserve([Hold("k", 93, 100)]), Reservation)
    finally:
        await counters.close()


async def test_a_live_holder_keeps_its_lease_past_the_lease_time(prefix: str) -> None:
    lease = 1.0  # renewed every third of it: a renewal may come 0.6 s late on a busy box
    holder = redis_counters(time.time, prefix=prefix, lease=lease)
    other = RedisCounters(REDIS_URL, prefix=prefix)
    try:
        got = await holder.reserve([Hold("k", 5, 100)])
        assert isinstance(got, Reservation)
        await asyncio.sleep(3 * lease)
        assert await other.get("k") == CounterValue(0, 5)
        await holder.commit(got, [3])
        assert await other.get("k") == CounterValue(3, 0)
    finally:
        await other.close()
        await holder.close()


async def test_expired_leases_are_settled_a_bounded_batch_a_call_and_admit_alike(
    prefix: str,
) -> None:
    lease = 1.0  # long enough that none runs out while the 40 are made
    holder = RedisCounters(REDIS_URL, prefix=prefix, lease=lease)
    for _ in range(40):
        assert isinstance(await holder.reserve([Hold("k", 1, 100)]), Reservation)
    await holder.close()  # no renewal from here: 40 leases run out together
    await asyncio.sleep(2 * lease)
    counters = redis_counters(FakeClock(time.time()), prefix=prefix)
    try:
        # Each read settles at most SWEEP (16) of them; held or charged, 40 take room.
        assert await counters.get("k") == CounterValue(16, 24)
        assert await counters.reserve([Hold("k", 61, 100)]) == Refusal("k", 100, 32, 8, 61)
        assert await counters.get("k") == CounterValue(40, 0)
        assert isinstance(await counters.reserve([Hold("k", 60, 100)]), Reservation)
    finally:
        await counters.close()


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    require_redis()
    host, port = REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
    made = TcpProxy((host, int(port)))
    await made.start()
    yield made
    if made.server is not None and made.server.is_serving():
        await made.stop()


async def test_a_holder_cut_off_past_its_lease_is_charged_once(
    prefix: str, proxy: TcpProxy
) -> None:
    holder = RedisCounters(f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix, lease=SHORT_LEASE)
    counters = redis_counters(time.time, prefix=prefix)
    try:
        less = await holder.reserve([Hold("k", 10, 100)])
        more = await holder.reserve([Hold("k", 10, 100)])
        assert isinstance(less, Reservation) and isinstance(more, Reservation)
        await proxy.stop()
        # Cut off, the node refuses every call: nothing is admitted uncounted.
        with pytest.raises(CountersUnavailable, match=f"127.0.0.1:{proxy.port}"):
            await holder.reserve([Hold("k", 1, 100)])

        async def charged() -> bool:
            return await counters.get("k") == CounterValue(20, 0)

        await eventually(charged, "both holds charged at their worst case")
        await proxy.start()
        # The calls ended after all: a commit below the hold adds nothing (never refunded),
        # one past it adds only what the hold did not cover; settling again, nothing.
        await holder.commit(less, [4])
        assert await counters.get("k") == CounterValue(20, 0)
        await holder.commit(more, [15])
        assert await counters.get("k") == CounterValue(25, 0)
        await holder.commit(more, [15])
        await holder.release(less)
        assert await counters.get("k") == CounterValue(25, 0)
        # Healed, the node admits again.
        assert isinstance(await holder.reserve([Hold("k", 75, 100)]), Reservation)
    finally:
        await counters.close()
        await holder.close()


# --- failing closed -----------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_unreachable_redis_raises_counters_unavailable_from_every_operation() -> None:
    port = closed_port()
    counters = RedisCounters(f"redis://127.0.0.1:{port}/0", timeout=1.0)
    settings = BreakerSettings(4, 2, 0.5, 1.0, 30.0, 1, 60.0)
    stranger = Reservation("not-issued", (("k", 1),))
    operations = [
        counters.reserve([Hold("k", 1, 10)]),
        counters.commit(stranger, [1]),
        counters.release(stranger),
        counters.add("k", 1),
        counters.drop(["k"]),
        counters.get("k"),
        counters.get_many(["k", "j"]),
        counters.take("bucket", 1, rate=1, capacity=1),
        counters.give("bucket", 1, capacity=1),
        counters.breaker_admit("b", time.time(), settings),
        counters.breaker_snapshots(),
    ]
    try:
        for operation in operations:
            with pytest.raises(CountersUnavailable, match=f"redis://127.0.0.1:{port}/0"):
                await operation
    finally:
        await counters.close()


async def test_an_error_never_shows_the_password_of_the_url() -> None:
    port = closed_port()
    counters = RedisCounters(f"redis://:hunter2@127.0.0.1:{port}/0", timeout=1.0)
    try:
        with pytest.raises(CountersUnavailable) as raised:
            await counters.reserve([Hold("k", 1, 10)])
        assert f"redis://:***@127.0.0.1:{port}/0" in str(raised.value)
        assert "hunter2" not in str(raised.value) + repr(counters)
    finally:
        await counters.close()


async def test_redis_stopped_mid_run_fails_closed_and_recovers(
    prefix: str, proxy: TcpProxy
) -> None:
    counters = RedisCounters(f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix)
    try:
        assert isinstance(await counters.reserve([Hold("k", 1, 10)]), Reservation)
        await proxy.stop()
        with pytest.raises(CountersUnavailable):
            await counters.reserve([Hold("k", 1, 10)])
        with pytest.raises(CountersUnavailable):
            await counters.get("k")
        await proxy.start()
        assert await counters.get("k") == CounterValue(0, 1)
    finally:
        await counters.close()


# --- keys ---------------------------------------------------------------------------


async def test_every_key_hashes_to_one_slot_and_windows_expire_in_redis(prefix: str) -> None:
    clock = FakeClock()
    counters = redis_counters(clock, prefix=prefix)
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    settings = BreakerSettings(4, 1, 0.5, 1.0, 30.0, 1, 60.0)
    try:
        held = await counters.reserve([Hold("task:1", 5, 10), Hold("day", 5, 10, ttl=60)])
        assert isinstance(held, Reservation)
        await counters.take("rpm", 1, rate=1, capacity=10)
        admission = await counters.breaker_admit("p:m", clock(), settings)
        await counters.breaker_record(
            "p:m", admission, failed=True, slow=False, now=clock(), settings=settings
        )
        keys = [key async for key in client.scan_iter(match=f"{{{prefix}}}:*")]
        assert len(keys) >= 7  # two counters, a reservation, leases, a bucket, a breaker
        assert len({key_slot(key.encode()) for key in keys}) == 1
        assert await client.pttl(f"{{{prefix}}}:c:task:1") == -1  # endless until dropped
        assert 0 < await client.pttl(f"{{{prefix}}}:c:day") <= (2 * 60 + 3600) * 1000
        await counters.commit(held, [1, 1])
        assert not await client.exists(f"{{{prefix}}}:r:{held.id}")
    finally:
        await client.aclose()
        await counters.close()


async def test_scripts_flushed_from_redis_are_loaded_again(prefix: str) -> None:
    counters = redis_counters(FakeClock(), prefix=prefix)
    client = Redis.from_url(REDIS_URL)
    try:
        assert await counters.add("k", 2) == 2
        await client.script_flush()
        assert await counters.add("k", 3) == 5
    finally:
        await client.aclose()
        await counters.close()


async def test_open_counters_builds_redis_counters_from_redis_urls() -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://redis.internal:6380/2"):
        built = open_counters(url)
        assert isinstance(built, RedisCounters) and built.shared
        await built.close()
    with pytest.raises(ValueError, match="redis://host:port/db"):
        open_counters("redis://")


# --- the same answers as MemoryCounters -------------------------------------------


async def test_redis_answers_as_memory_does_op_for_op(prefix: str) -> None:
    """A seeded random run of every operation on both, the clock moving between them:
    every answer the same (reservation ids aside), floats to the bit."""
    rng = random.Random(20261206)
    clock = FakeClock()
    memory = MemoryCounters(clock=clock, wall_clock=clock)
    redis = redis_counters(clock, prefix=prefix)
    both: tuple[Counters, Counters] = (memory, redis)
    keys = ["task", "session", "fleet", "day"]
    ttls = {"day": 30.0, "fleet": 7.5}
    open_pairs: list[tuple[Reservation, Reservation]] = []
    admissions: list[tuple[str, Admission, Admission]] = []
    settings = [
        BreakerSettings(4, 2, 0.5, 0.75, 5.0, 2, 10.0),
        BreakerSettings(6, 3, 0.3, 0.5, 3.0, 1, 4.0),
    ]
    try:
        for step in range(1500):
            op = rng.randrange(10)
            if op == 0:
                clock.advance(rng.choice([0.1, 0.5, 2.0, 7.5, 31.0]))
            elif op in (1, 2):
                chosen = rng.sample(keys, rng.randint(1, 3))
                # Holds of at least 1: MemoryCounters loses the usage of a hold of 0 whose
                # key was dropped or expired while it was open (it pins nothing).
                holds = [
                    Hold(k, rng.randint(1, 6), rng.randint(5, 40), ttl=ttls.get(k)) for k in chosen
                ]
                got = [await c.reserve(holds) for c in both]
                if isinstance(got[0], Reservation):
                    assert isinstance(got[1], Reservation), (step, got)
                    assert got[0].holds == got[1].holds
                    open_pairs.append((got[0], got[1]))
                else:
                    assert got[0] == got[1], step
            elif op == 3 and open_pairs:
                pair = open_pairs.pop(rng.randrange(len(open_pairs)))
                actual = [rng.randint(0, 8) for _ in pair[0].holds]
                commit = rng.random() < 0.5
                for counters, reservation in zip(both, pair, strict=True):
                    if commit:
                        await counters.commit(reservation, actual)
                    else:
                        await counters.release(reservation)
                    # Settling again changes nothing on either.
                    await counters.commit(reservation, actual)
            elif op == 4:
                key, amount = rng.choice(keys), rng.randint(0, 5)
                added = [await c.add(key, amount, ttls.get(key)) for c in both]
                assert added[0] == added[1], step
            elif op == 5:
                if rng.random() < 0.2:
                    dropped = rng.choice(keys)
                    for counters in both:
                        await counters.drop([dropped])
                read = [await c.get_many(keys) for c in both]
                assert read[0] == read[1], (step, read)
            elif op == 6:
                key = rng.choice(["rpm", "tpm"])
                amount, rate, capacity = rng.choice([0.5, 1.0, 3.0]), 0.7, 5.0
                if rng.random() < 0.3:
                    for counters in both:
                        await counters.give(key, amount, capacity)
                waits = [await c.take(key, amount, rate, capacity) for c in both]
                assert waits[0] == waits[1], (step, waits)
            else:
                key = rng.choice(["breaker:a", "breaker:b"])
                chosen_settings = settings[key == "breaker:b"]
                if op == 7 or not admissions:
                    got_admissions = [
                        await c.breaker_admit(key, clock(), chosen_settings) for c in both
                    ]
                    assert got_admissions[0] == got_admissions[1], (step, got_admissions)
                    admissions.append((key, got_admissions[0], got_admissions[1]))
                else:
                    key, *pair_admissions = admissions.pop(rng.randrange(len(admissions)))
                    chosen_settings = settings[key == "breaker:b"]
                    failed, slow = rng.random() < 0.5, rng.random() < 0.3
                    release = op == 9 and rng.random() < 0.5
                    answers = []
                    for counters, admission in zip(both, pair_admissions, strict=True):
                        if release:
                            await counters.breaker_release(key, admission)
                            continue
                        answers.append(
                            await counters.breaker_record(
                                key,
                                admission,
                                failed=failed,
                                slow=slow,
                                now=clock(),
                                settings=chosen_settings,
                            )
                        )
                    if answers:
                        assert answers[0] == answers[1], (step, answers)
            assert await memory.breaker_snapshots() == await redis.breaker_snapshots(), step
    finally:
        await redis.close()
        await memory.close()
