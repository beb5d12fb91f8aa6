"""Symptoms an agent runbook names, as signals.

- `run.anomaly`: a run whose duration or step count passes 3 × its agent type's p99
  (over the last BASELINE_RUNS completed runs of the type, once there are
  MIN_BASELINE_RUNS of them): a common escalation threshold. Recorded once per signal
  per run, as an audit event and in `corral_run_anomalies_total`.
- `tool.drift_suspected`: a tool whose schema-related errors (arguments that do not fit
  it) pass 5 % of its calls over DRIFT_WINDOW seconds (at least DRIFT_MIN_CALLS calls):
  the tool's definition probably changed under the agent. Once per window per tool.

Checked on every step in O(1): the baselines are worked out from the store off the hot
path (`refresh`, from the supervisor's watcher) and only compared here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from corral.calls import RunStatus
from corral.state import RunRecord, Store
from corral.telemetry.audit import AuditLog
from corral.telemetry.kpis import Kpis

if TYPE_CHECKING:
    from corral.gates.base import RunContext

log = logging.getLogger("corral")

ANOMALY_FACTOR = 3.0
BASELINE_RUNS = 1000
MIN_BASELINE_RUNS = 20
DRIFT_RATE = 0.05
DRIFT_WINDOW = 600.0
DRIFT_MIN_CALLS = 20
# Errors that say the call's arguments do not fit the tool (its schema), by type name.
SCHEMA_ERRORS = frozenset({"ToolArgumentError", "ValidationError", "TypeError"})


def p99(values: list[float]) -> float:
    """The nearest-rank 99th percentile of `values` (not empty)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


class _Window:
    """A tool's calls and schema errors in the current drift window."""

    __slots__ = ("calls", "errors", "fired", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.calls = 0
        self.errors = 0
        self.fired = False


class Signals:
    def __init__(self, audit: AuditLog, kpis: Kpis, clock: Callable[[], float] = time.time) -> None:
        self._audit = audit
        self._kpis = kpis
        self._clock = clock
        # agent type -> (p99 seconds, p99 steps), from completed runs.
        self.baselines: dict[str, tuple[float, float]] = {}
        self._windows: dict[str, _Window] = {}
        self._pending: set[asyncio.Task[Any]] = set()

    async def refresh(self, store: Store) -> None:
        """Work the baselines out again from the runs the store has completed."""
        runs = await store.list_runs(limit=BASELINE_RUNS, status=RunStatus.COMPLETED)
        by_type: dict[str, list[RunRecord]] = {}
        for run in runs:
            by_type.setdefault(run.agent_type, []).append(run)
        baselines = {}
        for agent_type, found in by_type.items():
            if len(found) < MIN_BASELINE_RUNS:
                continue
            seconds = [_duration(run) for run in found]
            baselines[agent_type] = (p99(seconds), p99([float(run.steps) for run in found]))
        self.baselines = baselines

    def step(self, ctx: RunContext) -> None:
        """After each call: has the run passed its type's p99 × 3?"""
        baseline = self.baselines.get(ctx.record.agent_type)
        if baseline is None:
            return
        record = ctx.record
        flagged = ctx.scratch.setdefault("anomaly", set())
        seconds = self._clock() - record.created_at - record.waiting_s
        for signal, value, limit in (
            ("duration", seconds, baseline[0]),
            ("steps", float(record.steps), baseline[1]),
        ):
            if signal not in flagged and limit > 0 and value > limit * ANOMALY_FACTOR:
                flagged.add(signal)
                self._kpis.anomaly(record.agent_type, signal)
                detail = {"signal": signal, "value": round(value, 3), "p99": round(limit, 3)}
                self._later(self._audit.append("run.anomaly", detail, record.id))

    def tool_done(self, ctx: RunContext, tool: str, error: str) -> None:
        if tool not in ctx.policy.tools:  # a name a client made up: refused, and not kept
            return
        now = self._clock()
        window = self._windows.get(tool)
        if window is None or now - window.started >= DRIFT_WINDOW:
            window = self._windows[tool] = _Window(now)
        window.calls += 1
        if error in SCHEMA_ERRORS:
            window.errors += 1
        if (
            not window.fired
            and window.calls >= DRIFT_MIN_CALLS
            and window.errors > DRIFT_RATE * window.calls
        ):
            window.fired = True
            self._kpis.drift_suspected(tool)
            detail = {"tool": tool, "calls": window.calls, "schema_errors": window.errors}
            log.warning(
                "tool %s: drift suspected (%d of %d calls)", tool, window.errors, window.calls
            )
            self._later(self._audit.append("tool.drift_suspected", detail, ctx.run_id))

    def _later(self, work: Coroutine[Any, Any, Any]) -> None:
        """Audited off the call's path: the signal must not slow or fail the call."""
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a signal could not be audited: %s", task.exception())

    async def drain(self) -> None:
        """Wait for the audit entries still being written (before the store closes)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def _duration(run: RunRecord) -> float:
    ended = run.ended_at if run.ended_at is not None else run.updated_at
    return max(0.0, ended - run.created_at - run.waiting_s)
