"""RedisCounters: Counters shared by every process and node that points at one Redis.

Every operation is one Lua script (redis_scripts.py), run by EVALSHA (loaded once per
server, again after a SCRIPT FLUSH), so each is atomic on the server and costs one round
trip: reserve checks every hold and takes all of them or none in one script, which is
what keeps task, session, fleet and global caps exact across any number of nodes.

Redis Cluster: a script may only touch keys of one slot, and a reservation spans keys of
several levels (a task's, its session's, the fleet's). Every key is written under one
hash tag, `{corral}:` (or `{<prefix>}:`), so all Corral keys hash to one slot: the
simplest exact answer. It trades cluster spread (one shard serves all of Corral's
counters; the others serve nothing of it) for atomic multi-level caps. Scale by giving
each deployment a prefix of its own, which lands on a slot of its own.

Reservations and leases: each admitted reservation is stored under its id (settling
deletes it, so a second commit or release finds nothing: exactly once) with a lease of
LEASE_SECONDS on the Redis server's clock. The instance that reserved renews the leases
of the reservations it holds from a background task every third of the lease. A lease
that runs out (its node died, or was cut off from Redis for longer than the lease) is
settled at its worst case: every amount held is charged as used, as a crash is, since the
upstream may have done the work; it is never refunded. Expired leases are settled lazily
inside reserve and the reads (a bounded sweep per call, see redis_scripts.SWEEP), so no
sweeper process is needed. A commit that comes after its lease ran out counts only usage
past the hold; a release then does nothing.

Partitions fail closed: a node that cannot reach Redis gets CountersUnavailable from
every operation and must refuse the calls they guard; its holds are charged at their
worst case once their leases run out, so the rest of the fleet neither loses the budget
for good nor admits past it. A reserve or commit whose answer was lost leaves its hold to
the lease as well.

Time: windows (`Hold.ttl`, `add(ttl=)`) follow `wall_clock` and token buckets `clock`,
both sent with each call (nodes share them, so both default to time.time and nodes
should run NTP); the keys carry explicit expiry times and a generous Redis expiry on top
(twice the window plus an hour) so keys of windows that passed disappear.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from corral.state import redis_scripts as lua
from corral.state.counters import (
    Admission,
    BreakerSettings,
    BreakerSnapshot,
    BreakerState,
    Counters,
    CountersUnavailable,
    CounterValue,
    Hold,
    Refusal,
    Reservation,
    check_units,
)

log = logging.getLogger(__name__)

# Seconds a reservation's hold lives without renewal: its owner renews it every third of
# this while the call runs; a node dead or cut off this long is charged its worst case.
LEASE_SECONDS = 30.0
# Leases renewed per script: bounds one renewal's time on the server.
_RENEW_BATCH = 256
# Connections per event loop, at most.
_MAX_CONNECTIONS = 32


@dataclass
class _Link:
    """The client of one event loop (asyncio connections belong to the loop that opened
    them) and a generator whose cleanup closes it when that loop shuts down."""

    loop: asyncio.AbstractEventLoop
    client: Redis
    closer: AsyncGenerator[None, None]


async def _closing(client: Redis) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await client.aclose()


class RedisCounters(Counters):
    """Counters in Redis, shared by every node using the same URL and prefix."""

    shared = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "corral",
        clock: Callable[[], float] = time.time,
        wall_clock: Callable[[], float] = time.time,
        lease: float = LEASE_SECONDS,
        timeout: float = 5.0,
    ) -> None:
        if not prefix or any(c in prefix for c in "{}"):
            raise ValueError(f"counters prefix must be non-empty, without braces: {prefix!r}")
        if not lease > 0:
            raise ValueError(f"counters lease must be > 0 seconds, got {lease!r}")
        self._url = url
        self._shown = _without_password(url)
        self._timeout = timeout
        self._clock = clock
        self._wall_clock = wall_clock
        self._lease = lease
        # One hash tag for every key: one slot (see the module docstring).
        self._p = f"{{{prefix}}}:"
        self._leases = self._p + "leases"
        self._breakers = self._p + "breakers"
        self._token = secrets.token_hex(8)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._links: dict[asyncio.AbstractEventLoop, _Link] = {}
        # Reservations this instance holds and renews; settling removes them.
        self._held: dict[str, None] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisCounters({self._shown!r}, prefix={self._p!r})"

    # --- the connection ---------------------------------------------------------------

    async def _client(self) -> Redis:
        loop = asyncio.get_running_loop()
        link = self._links.get(loop)
        if link is not None:
            return link.client
        if self._closed:
            raise CountersUnavailable(f"{self!r} is closed")
        pool = BlockingConnectionPool.from_url(
            self._url,
            # Calls past this many in flight wait for a connection (up to the timeout).
            max_connections=_MAX_CONNECTIONS,
            timeout=self._timeout,
            decode_responses=True,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            # No silent retries: a command sent twice could count twice. The scripts
            # that are safe to repeat are retried once by _run.
            retry=Retry(NoBackoff(), 0),
        )
        client = Redis.from_pool(pool)
        closer = _closing(client)
        await anext(closer)  # registered with the loop: closed by its shutdown_asyncgens
        with self._lock:
            for old in [lp for lp in self._links if lp.is_closed()]:
                del self._links[old]
            self._links[loop] = _Link(loop, client, closer)
        return client

    async def _run(
        self, script: lua.Script, keys: Sequence[str], args: Sequence[Any], *, again: bool
    ) -> Any:
        """Run a script; CountersUnavailable if Redis cannot be reached or fails. `again`:
        the script may run twice without effect, so a dropped connection is retried once."""
        client = await self._client()
        for attempt in range(2):
            try:
                try:
                    return await client.evalsha(script.sha, len(keys), *keys, *args)
                except NoScriptError:
                    await client.script_load(script.source)
                    return await client.evalsha(script.sha, len(keys), *keys, *args)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if again and attempt == 0:
                    continue
                raise CountersUnavailable(f"counters at {self._shown}: {exc}") from exc
            except RedisError as exc:
                raise CountersUnavailable(f"counters at {self._shown}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _key(self, key: str) -> str:
        return self._p + "c:" + key

    def _rkey(self, reservation_id: str) -> str:
        return self._p + "r:" + reservation_id

    # --- budgets ----------------------------------------------------------------------

    async def reserve(self, holds: Sequence[Hold]) -> Reservation | Refusal:
        if len({hold.key for hold in holds}) != len(holds):
            raise ValueError(f"reserve: keys must be distinct, got {[h.key for h in holds]}")
        reservation_id = f"{self._token}-{next(self._ids)}"
        keys = [self._leases, self._rkey(reservation_id)]
        args: list[Any] = [self._wall_clock(), self._lease, reservation_id]
        for hold in holds:
            keys.append(self._key(hold.key))
            args += (hold.amount, hold.limit, hold.ttl or 0)
        got = await self._run(lua.RESERVE, keys, args, again=True)
        if got[0]:
            hold = holds[got[0] - 1]
            return Refusal(hold.key, hold.limit, int(got[1]), int(got[2]), hold.amount)
        self._held[reservation_id] = None
        self._keep_renewing()
        return Reservation(reservation_id, tuple((hold.key, hold.amount) for hold in holds))

    async def commit(self, reservation: Reservation, actual: Sequence[int]) -> None:
        if len(actual) != len(reservation.holds):
            raise ValueError(
                f"commit {reservation.id}: {len(actual)} actual amounts"
                f" for {len(reservation.holds)} holds"
            )
        for (key, _), amount in zip(reservation.holds, actual, strict=True):
            if type(amount) is not int or amount < 0:
                check_units(f"commit {reservation.id} actual for {key!r}", amount)
        await self._settle(reservation, 1, actual)

    async def release(self, reservation: Reservation) -> None:
        await self._settle(reservation, 0, ())

    async def _settle(self, reservation: Reservation, commit: int, actual: Sequence[int]) -> None:
        # No longer renewed, whatever happens: if Redis does not answer, the lease settles it.
        self._held.pop(reservation.id, None)
        keys = [self._leases, self._rkey(reservation.id)]
        keys += [self._key(key) for key, _ in reservation.holds]
        args = [self._wall_clock(), reservation.id, commit, *actual]
        await self._run(lua.SETTLE, keys, args, again=True)

    async def add(self, key: str, amount: int, ttl: float | None = None) -> int:
        check_units(f"add {key!r} amount", amount)
        args = [self._wall_clock(), amount, ttl or 0]
        return int(await self._run(lua.ADD, [self._key(key)], args, again=False))

    async def drop(self, keys: Sequence[str]) -> None:
        if keys:
            await self._run(lua.DROP, [self._key(key) for key in keys], (), again=True)

    async def get(self, key: str) -> CounterValue:
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: Sequence[str]) -> list[CounterValue]:
        names = [self._leases, *(self._key(key) for key in keys)]
        got = await self._run(lua.GET_MANY, names, [self._wall_clock()], again=True)
        return [CounterValue(int(got[i]), int(got[i + 1])) for i in range(0, len(got), 2)]

    # --- leases -----------------------------------------------------------------------

    def _keep_renewing(self) -> None:
        """Make sure a task renews the leases held, on this loop if none runs."""
        task = self._renewer
        if task is not None and not task.done() and not task.get_loop().is_closed():
            return
        with self._lock:
            task = self._renewer
            if task is None or task.done() or task.get_loop().is_closed():
                self._renewer = asyncio.get_running_loop().create_task(
                    self._renew_forever(), name="corral-counters-leases"
                )

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                await self.renew()
            except CountersUnavailable as exc:
                log.warning("could not renew %d counter leases: %s", len(self._held), exc)

    async def renew(self) -> None:
        """Extend the lease of every reservation this instance holds (the background task
        does it every third of the lease); forget those Redis settled already."""
        with self._lock:  # other threads' loops reserve and settle meanwhile
            held = list(self._held)
        for start in range(0, len(held), _RENEW_BATCH):
            ids = held[start : start + _RENEW_BATCH]
            keys = [self._leases, *(self._rkey(i) for i in ids)]
            gone = await self._run(
                lua.RENEW, keys, [self._wall_clock(), self._lease, *ids], again=True
            )
            for reservation_id in gone:
                self._held.pop(reservation_id, None)

    # --- token buckets ----------------------------------------------------------------

    async def take(self, key: str, amount: float, rate: float, capacity: float) -> float:
        if not rate > 0 or not capacity > 0:
            raise ValueError(f"take {key!r}: rate and capacity must be > 0, got {rate}, {capacity}")
        if not 0 <= amount <= capacity:
            raise ValueError(f"take {key!r}: amount must be in [0, {capacity}], got {amount}")
        args = [self._clock(), float(amount), float(rate), float(capacity)]
        return float(await self._run(lua.TAKE, [self._p + "t:" + key], args, again=False))

    async def give(self, key: str, amount: float, capacity: float) -> None:
        if not amount >= 0:
            raise ValueError(f"give {key!r}: amount must be >= 0, got {amount}")
        args = [float(amount), float(capacity)]
        await self._run(lua.GIVE, [self._p + "t:" + key], args, again=False)

    # --- circuit breakers -------------------------------------------------------------

    async def breaker_admit(self, key: str, now: float, settings: BreakerSettings) -> Admission:
        args = [
            float(now),
            float(settings.open_for),
            float(settings.probe_silence),
            settings.half_open_probes,
        ]
        got = await self._run(lua.BREAKER_ADMIT, [self._p + "b:" + key], args, again=False)
        admitted, state, generation, retry_in, changed = got
        return Admission(
            bool(admitted), BreakerState(state), int(generation), float(retry_in), bool(changed)
        )

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
        keys = [self._p + "b:" + key, self._p + "br:" + key, self._breakers]
        args = [
            key,
            admission.generation,
            int(admission.admitted),
            int(failed) + 2 * int(slow),
            float(now),
            settings.window,
            settings.min_calls,
            float(settings.failure_rate),
            float(settings.slow_rate),
            float(settings.open_for),
            settings.half_open_probes,
        ]
        got = await self._run(lua.BREAKER_RECORD, keys, args, again=False)
        return None if got is None else _snapshot(got)

    async def breaker_release(self, key: str, admission: Admission) -> None:
        half_open = int(admission.state is BreakerState.HALF_OPEN)
        args = [admission.generation, half_open]
        await self._run(lua.BREAKER_RELEASE, [self._p + "b:" + key], args, again=False)

    async def breaker_snapshots(self) -> dict[str, BreakerSnapshot]:
        got = await self._run(lua.BREAKER_SNAPSHOTS, [self._breakers], [self._p + "b:"], again=True)
        return {got[i]: _snapshot(got[i + 1 : i + 9]) for i in range(0, len(got), 9)}

    # --- closing ----------------------------------------------------------------------

    async def close(self) -> None:
        """Stop renewing and close every connection. Reservations still held are not
        settled here: their leases run out and charge them at their worst case."""
        self._closed = True
        current = asyncio.get_running_loop()
        task, self._renewer = self._renewer, None
        if task is not None and not task.done():
            if task.get_loop() is current:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            elif not task.get_loop().is_closed():
                task.get_loop().call_soon_threadsafe(task.cancel)
        with self._lock:
            links, self._links = list(self._links.values()), {}
        for link in links:
            aclose = link.closer.aclose()
            if link.loop is current:
                await aclose
            elif link.loop.is_running():
                future = asyncio.run_coroutine_threadsafe(aclose, link.loop)
                await asyncio.wrap_future(future)
            else:
                aclose.close()  # that loop is gone, and its shutdown closed the client


def _without_password(url: str) -> str:
    """The URL to show in errors and logs: a password in it is replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def _snapshot(got: Sequence[Any]) -> BreakerSnapshot:
    state = BreakerState(got[0])
    closed = state is BreakerState.CLOSED
    return BreakerSnapshot(
        state,
        int(got[1]),
        int(got[2]),
        int(got[3]),
        int(got[4]),
        int(got[5]),
        None if closed else float(got[6]),
        None if closed else float(got[7]),
    )
