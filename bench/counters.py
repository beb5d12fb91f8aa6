"""Reserve + commit, MemoryCounters against RedisCounters, in one run.

One pair is what the budget gate does around every call: reserve a hold at task, session,
fleet and global level (all or none), then commit the actual amounts. Two measures each:

  latency     pairs one after another, each timed (median and p99, nearest rank, in µs);
              the variants run interleaved in rounds after a warm-up, so drift lands on
              both alike
  throughput  CONCURRENCY tasks making pairs at once for a fixed count: pairs per second

RedisCounters talks to the Redis at CORRAL_BENCH_REDIS_URL (redis://127.0.0.1:6379/0 by
default) under a prefix of its own, deleted at the end; each pair there is two round
trips (one script each).

Run: .venv/bin/python bench/counters.py
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field

from redis.asyncio import Redis

from corral.aio import loop_factory
from corral.state import Counters, Hold, MemoryCounters, Reservation
from corral.state.redis import RedisCounters

REDIS_URL = os.environ.get("CORRAL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
WARM_UP = 500
ROUNDS = 10
PER_ROUND = 1000
CONCURRENCY = 32
THROUGHPUT_PAIRS = 20_000
LIMIT = 10**15  # never reached: the bench measures admissions


@dataclass
class Variant:
    name: str
    counters: Counters
    samples: list[int] = field(default_factory=list)
    pairs_per_second: float = 0.0

    def summary(self) -> tuple[float, float]:
        """Median and p99 (nearest rank) in µs."""
        ordered = sorted(self.samples)
        p99 = ordered[math.ceil(0.99 * len(ordered)) - 1]
        return statistics.median(ordered) / 1000, p99 / 1000


tasks = itertools.count()


def holds() -> list[Hold]:
    """A call's holds, as the budget gate builds them: a task of its own among a few."""
    task = next(tasks) % 64
    return [
        Hold(f"task:{task}:usd", 2_000, LIMIT),
        Hold(f"session:{task % 8}:usd", 2_000, LIMIT),
        Hold("fleet:usd:day", 2_000, LIMIT, ttl=86_400),
        Hold("global:usd", 2_000, LIMIT),
    ]


async def pair(counters: Counters) -> None:
    got = await counters.reserve(holds())
    assert isinstance(got, Reservation), got
    await counters.commit(got, [1_500, 1_500, 1_500, 1_500])


async def measure(variant: Variant, pairs: int, *, keep: bool) -> None:
    counters, clock = variant.counters, time.perf_counter_ns
    for _ in range(pairs):
        started = clock()
        await pair(counters)
        elapsed = clock() - started
        if keep:
            variant.samples.append(elapsed)


async def throughput(variant: Variant) -> None:
    each = THROUGHPUT_PAIRS // CONCURRENCY

    async def worker() -> None:
        for _ in range(each):
            await pair(variant.counters)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    variant.pairs_per_second = each * CONCURRENCY / (time.perf_counter() - started)


async def purge(prefix: str) -> None:
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{{{prefix}}}:*", count=1000)]
        if keys:
            await client.unlink(*keys)
    finally:
        await client.aclose()


async def main() -> None:
    prefix = f"corral-bench-{uuid.uuid4().hex[:12]}"
    variants = [
        Variant("memory", MemoryCounters()),
        Variant("redis", RedisCounters(REDIS_URL, prefix=prefix)),
    ]
    try:
        for variant in variants:
            await measure(variant, WARM_UP, keep=False)
        for _ in range(ROUNDS):
            for variant in variants:
                gc.collect()  # a collection owed by one variant is not charged to the next
                await measure(variant, PER_ROUND, keep=True)
        for variant in variants:
            gc.collect()
            await throughput(variant)
    finally:
        for variant in variants:
            await variant.counters.close()
        await purge(prefix)

    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    print(
        f"corral counters, reserve (4 holds) + commit; Python {sys.version.split()[0]}, "
        f"{loop} event loop, Redis at {REDIS_URL}"
    )
    print(f"{'counters':<9} {'pairs':>6} {'median µs':>10} {'p99 µs':>8} {'pairs/s':>10}")
    for variant in variants:
        median, p99 = variant.summary()
        print(
            f"{variant.name:<9} {len(variant.samples):>6} {median:>10.1f} {p99:>8.1f}"
            f" {variant.pairs_per_second:>10.0f}"
        )
    memory, redis = variants
    (m_median, m_p99), (r_median, r_p99) = memory.summary(), redis.summary()
    print(
        f"redis/memory: median {r_median / m_median:.1f}x, p99 {r_p99 / m_p99:.1f}x; "
        f"throughput memory/redis {memory.pairs_per_second / redis.pairs_per_second:.1f}x "
        f"({CONCURRENCY} tasks at once)"
    )


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())
