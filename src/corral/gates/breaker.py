"""Circuit breaker: stop sending calls to a provider's model while it is failing or slow.

resilience4j's count-based breaker, one per provider and upstream model, its state
in Counters so every node sharing them shares the breaker. Closed, it remembers the
outcomes of the last `window` calls; once `min_calls` are in, a failure rate or a
slow-call rate at or above its threshold opens it. Open, it refuses every call for
`open_for` (CircuitOpen: the route gate falls back, or halts with circuit_open).
Then it half-opens: `half_open_probes` trial calls go through, and their rates
decide between closed with a fresh window and open again. Unlike a fixed cooldown,
full traffic comes back only after trial calls answered, and slow calls trip it too.

The gate sits below retry, so each attempt is one outcome.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from corral.calls import Call, Result, StreamDelta, StreamSink
from corral.gates.base import Next, RunContext
from corral.policy import Breaker
from corral.providers.base import FailureKind, ProviderError
from corral.state.counters import (
    Admission,
    BreakerSettings,
    BreakerSnapshot,
    BreakerState,
    Counters,
)
from corral.telemetry.kpis import Kpis

log = logging.getLogger("corral")

# The provider could not serve the request. A 429 (our quota, not its health) and the
# client-side failures (bad request, auth, context length, content policy: the same
# request fails the same way anywhere) say nothing about whether it can serve one, so
# they are counted neither as failures nor as successes, as resilience4j's
# ignoreExceptions: 429s from a saturated quota must not dilute real 5xx either.
FAILURES = frozenset({FailureKind.UNAVAILABLE, FailureKind.TIMEOUT})


class CircuitOpen(Exception):
    """A breaker refused the call before it left.

    Not a ProviderError: nothing reached the provider, so retrying the same model is
    pointless; the route gate tries the next model instead. `retry_in` is the seconds
    until the breaker half-opens, 0.0 when it is half-open with every trial call out.
    """

    def __init__(self, key: str, model: str, retry_in: float, state: BreakerState) -> None:
        if state is BreakerState.OPEN:
            why = f"open, half-open in {retry_in:.1f}s"
        else:
            why = "half-open, its trial calls are all out"
        super().__init__(f"breaker {key} for model '{model}' is {why}")
        self.key = key
        self.model = model
        self.retry_in = retry_in
        self.state = state


def breaker_settings(breaker: Breaker) -> BreakerSettings:
    """The policy's breaker section as the counters take it."""
    return BreakerSettings(
        window=breaker.window,
        # As resilience4j: a count-based window never holds more than `window` calls.
        min_calls=min(breaker.min_calls, breaker.window),
        failure_rate=breaker.failure_rate,
        slow_rate=breaker.slow_rate,
        open_for=breaker.open_for,
        half_open_probes=breaker.half_open_probes,
        # Silent that long, a probe still out is a slow call anyway, and has been out
        # as long as the breaker stayed open: it is presumed lost.
        probe_silence=max(breaker.open_for, breaker.slow_call),
    )


class _FirstDelta:
    """A stream sink that notes when the first delta came. A streamed call is slow when
    its first byte is: a long answer streamed steadily is not a struggling provider."""

    __slots__ = ("at", "sink", "timer")

    def __init__(self, sink: StreamSink, timer: Callable[[], float]) -> None:
        self.sink = sink
        self.timer = timer
        self.at: float | None = None

    async def __call__(self, delta: StreamDelta) -> None:
        if self.at is None:
            self.at = self.timer()
        await self.sink(delta)


class BreakerGate:
    """`clock` is wall time, shared with other nodes through the counters; `timer`
    measures how long a call took."""

    def __init__(
        self,
        counters: Counters,
        *,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        kpis: Kpis | None = None,
    ) -> None:
        self._counters = counters
        self._kpis = kpis
        self._clock = clock
        self._timer = timer
        self._built: tuple[Breaker, BreakerSettings] | None = None

    def _settings(self, breaker: Breaker) -> BreakerSettings:
        # Built again only when a reload brings another breaker section.
        if self._built is None or self._built[0] is not breaker:
            self._built = (breaker, breaker_settings(breaker))
        return self._built[1]

    async def __call__(self, call: Call, ctx: RunContext, next: Next) -> Result:
        if call.kind == "tool":
            return await next(call, ctx)
        policy = ctx.policy
        name = call.target or policy.routes.get(call.model, (call.model,))[0]
        model = policy.models[name]
        key = f"breaker:{model.provider}:{model.model}"
        settings = self._settings(policy.breaker)
        admission = await self._counters.breaker_admit(key, self._clock(), settings)
        if self._kpis is not None:
            self._kpis.breaker(model.provider, model.model, admission.state.value)
        if admission.changed:
            _log_admission(key, admission, settings)
        if not admission.admitted:
            raise CircuitOpen(key, name, admission.retry_in, admission.state)

        sink = call.sink
        first = None
        if sink is not None:
            first = call.sink = _FirstDelta(sink, self._timer)
        started = self._timer()
        try:
            result = await next(call, ctx)
        except ProviderError as failure:
            if failure.kind in FAILURES:
                slow = self._took(started, first) >= policy.breaker.slow_call
                await self._record(key, admission, settings, failed=True, slow=slow)
            else:
                await self._counters.breaker_release(key, admission)
            raise
        except BaseException:  # a halt or a cancellation: nothing learned about the provider
            await self._counters.breaker_release(key, admission)
            raise
        finally:
            call.sink = sink
        slow = self._took(started, first) >= policy.breaker.slow_call
        await self._record(key, admission, settings, failed=False, slow=slow)
        return result

    def _took(self, started: float, first: _FirstDelta | None) -> float:
        """Seconds the call took: to its first delta if it streamed one."""
        ended = first.at if first is not None and first.at is not None else self._timer()
        return ended - started

    async def _record(
        self,
        key: str,
        admission: Admission,
        settings: BreakerSettings,
        *,
        failed: bool,
        slow: bool,
    ) -> None:
        changed = await self._counters.breaker_record(
            key, admission, failed=failed, slow=slow, now=self._clock(), settings=settings
        )
        if changed is not None:
            _log_change(key, changed, settings)
            if self._kpis is not None:
                _, provider, model = key.split(":", 2)
                self._kpis.breaker(provider, model, changed.state.value)


def _log_admission(key: str, admission: Admission, settings: BreakerSettings) -> None:
    if admission.state is BreakerState.HALF_OPEN:
        log.warning(
            "breaker %s half-open: letting %d trial calls through",
            key,
            settings.half_open_probes,
        )
    else:
        log.warning(
            "breaker %s open again: no word from its trial calls for %gs; refusing calls for %gs",
            key,
            settings.probe_silence,
            settings.open_for,
        )


def _log_change(key: str, snapshot: BreakerSnapshot, settings: BreakerSettings) -> None:
    if snapshot.state is BreakerState.CLOSED:
        log.warning("breaker %s closed: its trial calls answered", key)
        return
    log.warning(
        "breaker %s open: %d of %d calls failed, %d slow; refusing calls for %gs",
        key,
        snapshot.failures,
        snapshot.calls,
        snapshot.slow,
        settings.open_for,
    )


async def breaker_report(counters: Counters, now: float) -> list[dict[str, Any]]:
    """Every breaker's state and figures, by key, as JSON-ready rows (the CLI and the
    gateway's admin API show these). `half_open_in` is for open breakers only."""
    rows = []
    for key, snap in sorted((await counters.breaker_snapshots()).items()):
        provider, _, model = key.removeprefix("breaker:").partition(":")
        half_open_in = None
        if snap.state is BreakerState.OPEN and snap.open_until is not None:
            half_open_in = max(0.0, snap.open_until - now)
        rows.append(
            {
                "key": key,
                "provider": provider,
                "model": model,
                "state": snap.state.value,
                "calls": snap.calls,
                "failures": snap.failures,
                "slow": snap.slow,
                "failure_rate": snap.failure_rate,
                "slow_rate": snap.slow_rate,
                "opened_at": snap.opened_at,
                "half_open_in": half_open_in,
                "probes_out": snap.probes_out,
            }
        )
    return rows
