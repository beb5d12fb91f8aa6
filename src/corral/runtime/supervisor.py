"""The Supervisor: owns the policy, the state, the pipeline and the runs of one process."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry.sdk.trace import TracerProvider as OwnTracerProvider
from opentelemetry.trace import Span, Status, StatusCode, TracerProvider

from corral.calls import Denied, Halt, Halted, RunStatus
from corral.gates.allowlist import AllowlistGate
from corral.gates.approval import ApprovalGate
from corral.gates.base import Cap, Gate, Next, RunContext, compose
from corral.gates.breaker import BreakerGate
from corral.gates.budget import MICRO_USD, BudgetGate, build_caps, cap_key
from corral.gates.context import ContextGate
from corral.gates.deadline import DeadlineGate
from corral.gates.idempotency import IdempotencyGate
from corral.gates.input_guard import InputGuardGate, SpotlightGate
from corral.gates.kill import KillSwitchGate
from corral.gates.loops import LoopGate
from corral.gates.output_guard import OutputGuardGate
from corral.gates.ratelimit import RateLimitGate
from corral.gates.record import RecordGate, view_of
from corral.gates.retry import RetryGate
from corral.gates.route import RouteGate
from corral.gates.trace import TraceGate
from corral.policy import LivePolicy, Policy
from corral.providers.anthropic import AnthropicAdapter
from corral.providers.base import Adapter
from corral.providers.http import HttpClient
from corral.providers.openai import OpenAIAdapter
from corral.runtime.recovery import (
    HOST,
    LEASE_RENEW_SECONDS,
    LEASE_TTL_SECONDS,
    find_dead,
    new_owner,
    recover,
    settle_orphan,
)
from corral.runtime.run import Run
from corral.runtime.sealing import open_policy_store, sealed
from corral.runtime.transport import Transport
from corral.state import (
    Counters,
    LeaseRecord,
    RunRecord,
    Spending,
    Store,
    StoreError,
    open_counters,
)
from corral.telemetry import export
from corral.telemetry.anomaly import Signals
from corral.telemetry.audit import AuditLog
from corral.telemetry.export import ExportStats
from corral.telemetry.guard_stats import GuardStats
from corral.telemetry.kpis import Kpis
from corral.telemetry.notify import Notifier
from corral.telemetry.tracing import Tracing, ids
from corral.tools.registry import Tool, describe

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("corral")

# How often the kill watcher asks the store for kill requests; a call in flight is
# cancelled within this long of `corral runs kill`.
KILL_POLL_SECONDS = 0.2
# Every this many ticks of it (5 s), approvals past their timeout that nobody waits on
# are settled: escalated, or timed out (see ApprovalWaiter.sweep).
APPROVAL_SWEEP_TICKS = 25
# Every this many (60 s), the anomaly baselines are worked out again from the store.
BASELINE_TICKS = 300


def pipeline_gates(
    store: Store,
    counters: Counters,
    audit: AuditLog,
    clock: Callable[[], float] = time.time,
    *,
    tools: Mapping[str, Tool] | None = None,
    notifier: Notifier | None = None,
    guard_stats: GuardStats | None = None,
    tracing: Tracing | None = None,
    kpis: Kpis | None = None,
    signals: Signals | None = None,
) -> list[Gate]:
    """The gates every call passes, outermost first (DESIGN.md's order).

    Budgets come first among the gates that cost or wait: a halt is decided before a
    call queues for a rate-limit share or is retried, and a call waiting for a human
    (the approval gate) holds none. The context gate's summaries go through the whole
    pipeline: `pipeline()` binds it once the gates are composed.
    """
    stats = GuardStats() if guard_stats is None else guard_stats
    tracing = Tracing() if tracing is None else tracing
    kpis = Kpis() if kpis is None else kpis
    signals = Signals(audit, kpis, clock) if signals is None else signals
    return [
        KillSwitchGate(),
        DeadlineGate(clock),
        TraceGate(tracing, kpis, signals),
        RecordGate(store, audit, clock),
        AllowlistGate(),
        IdempotencyGate(store, clock),
        InputGuardGate(audit, stats),
        LoopGate(audit, clock, kpis),
        ContextGate(store, audit, clock),
        SpotlightGate(),
        ApprovalGate(store, audit, {} if tools is None else tools, clock, notifier, kpis),
        BudgetGate(counters, clock, store),
        RateLimitGate(counters),
        RouteGate(audit, kpis),
        RetryGate(counters, clock=clock, tracing=tracing, kpis=kpis),
        BreakerGate(counters, clock=clock, kpis=kpis),
        OutputGuardGate(audit, stats),
    ]


def pipeline(gates: list[Gate], transport: Next) -> Next:
    """The gates composed around the transport, with the gates that call back into the
    pipeline (the context gate's summaries, the output guard's repairs) bound to it."""
    composed = compose(gates, transport)
    for gate in gates:
        if isinstance(gate, ContextGate | OutputGuardGate):
            gate.bind(composed)
    return composed


class RunInUse(ValueError):
    """The run is being served by another live process (its lease is fresh)."""


class Supervisor:
    """Build with `Supervisor.from_policy(path)`; one per process is the usual shape."""

    def __init__(
        self,
        policy: LivePolicy,
        *,
        store: Store,
        counters: Counters,
        clock: Callable[[], float] = time.time,
        env: Mapping[str, str] | None = None,
        lease_ttl: float = LEASE_TTL_SECONDS,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.policy = policy
        # Redacting and sealing what it keeps, if the policy says so (runtime/sealing.py).
        self.store = store = sealed(store, policy.current, env)
        self.counters = counters
        self.audit = AuditLog(store, clock)
        self._clock = clock
        self._env = os.environ if env is None else env
        self._tools: dict[str, Tool] = {}
        self._http = HttpClient()
        self._adapters: dict[str, Adapter] = {}
        self._adapters_for: Policy | None = None
        self._runs: dict[str, Run] = {}
        self._in_session: dict[str, int] = {}  # runs of this process per session key
        self._watcher: asyncio.Task[None] | None = None
        # The lease this process serves its runs under (see runtime/recovery.py).
        self.owner = new_owner()
        self._lease_ttl = lease_ttl
        self._lease_started = clock()
        self._renewed_at = -math.inf
        self._recovered: asyncio.Future[None] | None = None
        self._recovered_ids: list[str] = []
        # Budget counter keys this process has rebuilt from the store (in-process
        # counters start empty); a key leaves the set when its counters are dropped.
        self._seeded: set[str] = set()
        self._seeding = asyncio.Lock()
        self.notifier = Notifier(policy.current.approvals_notify, self.audit)
        self.guard_stats = GuardStats()  # what the guards did; the gateway's /metrics shows it
        # Spans: to the provider given, else to the collector the policy or the OTEL_*
        # environment names (a provider of Corral's own, shut down with it), else to
        # OpenTelemetry's global provider (the application's, or a no-op).
        telemetry = policy.current.telemetry
        self.export_stats = ExportStats()
        self._own_provider: OwnTracerProvider | None = None
        if tracer_provider is None:
            tracer_provider = self._own_provider = export.tracer_provider(
                telemetry, self._env, stats=self.export_stats
            )
        self.tracing = Tracing(
            tracer_provider, capture_content=telemetry.capture_content, redact=store.redactor
        )
        self.kpis = Kpis()
        self.signals = Signals(self.audit, self.kpis, clock)
        gates = pipeline_gates(
            store, counters, self.audit, clock,
            tools=self._tools, notifier=self.notifier, guard_stats=self.guard_stats,
            tracing=self.tracing, kpis=self.kpis, signals=self.signals,
        )  # fmt: skip
        self._loops = next(gate for gate in gates if isinstance(gate, LoopGate))
        # Told of decisions made in this process (the gateway's admin API), to release
        # the calls waiting on them at once.
        self.approvals = next(gate for gate in gates if isinstance(gate, ApprovalGate)).waiter
        self._pipeline: Next = pipeline(gates, Transport(self._adapters, self._tools))

    @classmethod
    def from_policy(
        cls,
        path: str | Path,
        *,
        store: Store | None = None,
        counters: Counters | None = None,
        clock: Callable[[], float] = time.time,
        env: Mapping[str, str] | None = None,
        lease_ttl: float = LEASE_TTL_SECONDS,
        tracer_provider: TracerProvider | None = None,
    ) -> Supervisor:
        """Load the policy and open the store and counters it names (unless given)."""
        live = LivePolicy(path, env=env)
        return cls(
            live,
            store=store or open_policy_store(live.current, env),
            counters=counters or open_counters(live.current.counters),
            clock=clock,
            env=env,
            lease_ttl=lease_ttl,
            tracer_provider=tracer_provider,
        )

    @property
    def collectors(self) -> tuple[Any, ...]:
        """What this supervisor counts, as Prometheus collectors (see corral.metrics)."""
        return (self.kpis, self.guard_stats, self.export_stats)

    def tool(
        self,
        name: str | None = None,
        *,
        preview: Callable[..., Any] | None = None,
        shadow: Callable[..., Any] | None = None,
        rollback: str | None = None,
    ) -> Callable[[F], F]:
        """Register a typed tool; its scope comes from the policy's `tools` section.

        `preview`: a side-effect-free dry run taking the tool's arguments (e.g. count the
        rows a write would touch); its result is shown to a reviewer and is `preview` to
        approval rules. `shadow`: the result an agent in shadow mode gets instead of the
        tool's. `rollback`: how to undo the action, for the reviewer (else the policy's
        `tools.X.rollback`)."""

        def register(fn: F) -> F:
            tool_name = name or fn.__name__
            declared = self.policy.current.tools.get(tool_name)
            if declared is None:
                known = ", ".join(sorted(self.policy.current.tools)) or "none"
                raise ValueError(
                    f"tool '{tool_name}' is not declared in the policy's tools (declared: {known})"
                )
            self._tools[tool_name] = describe(
                fn,
                tool_name,
                declared.scope,
                preview=preview,
                shadow=shadow,
                rollback=rollback,  # else the policy's tools.X.rollback, as reloaded
            )
            return fn

        return register

    def run(
        self,
        *,
        agent: str,
        task: str | None = None,
        session: str | None = None,
        halt_on_upstream_failure: bool = True,
        oneshot: bool = False,
        parent_run: str | None = None,
        request_span: Span | None = None,
    ) -> RunScope:
        """`async with sup.run(agent=..., task=...) as run:` — completes on a clean exit.

        With `halt_on_upstream_failure=False`, a call whose route has no model that
        answers raises UpstreamUnavailable and the run goes on, instead of halting.
        `oneshot`: nobody will resume the run (a gateway request of its own), so if this
        process dies mid-call, recovery halts it with `interrupted`. `parent_run`: the run
        that started this one (an agent of the same team, else corral.Denied): a link for
        traces and the agent graph; this run's spending counts against its own caps.
        `request_span`: the gateway's span of the request opening the run, whose trace is
        the run's first (each request is a trace of its own; no run span is made)."""
        options = {"halt_on_upstream_failure": halt_on_upstream_failure}
        return RunScope(
            lambda: self._start(agent, task, session, oneshot, options, parent_run, request_span)
        )

    def resume(
        self, run_id: str, *, halt_on_upstream_failure: bool = True, traced: bool = True
    ) -> RunScope:
        """Continue a run from its last checkpoint; tool calls that already ran replay.

        `traced=False`: no run span (the gateway traces each request instead)."""
        options = {"halt_on_upstream_failure": halt_on_upstream_failure}
        return RunScope(lambda: self._resume(run_id, options, traced))

    async def recover(self) -> list[str]:
        """Settle the runs of processes that died (see runtime/recovery.py) and take this
        process's lease; done once, before this supervisor's first run (again if it
        failed). Returns the ids of the runs settled."""
        if self._recovered is None or (
            self._recovered.done() and self._recovered.exception() is not None
        ):
            self._recovered = asyncio.ensure_future(self._recover())
        await asyncio.shield(self._recovered)
        if self._clock() - self._renewed_at >= LEASE_RENEW_SECONDS:
            # Idle a while (no runs, so no watcher renewing it): renewed before this
            # process owns a new run, so nobody takes that run for an orphan.
            await self._renew_lease()
        return self._recovered_ids

    async def _recover(self) -> None:
        await self._renew_lease()
        self._recovered_ids = await recover(
            self.store, self.audit, self.owner, now=self._clock(), ttl=self._lease_ttl
        )

    async def _renew_lease(self) -> None:
        now = self._clock()
        lease = LeaseRecord(self.owner, HOST, os.getpid(), self._lease_started, now)
        await self.store.renew_lease(lease)
        self._renewed_at = now

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._recovered is not None and self._recovered.done():
            # Runs still open (a gateway's sessions) stay running, to resume elsewhere.
            with contextlib.suppress(StoreError):
                await self.store.drop_leases([self.owner])
        await self.signals.drain()
        await self.notifier.close()
        if self._own_provider is not None:
            await asyncio.to_thread(self._own_provider.shutdown)
        await self._http.close()
        await self.counters.close()
        await self.store.close()

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- runs ----------------------------------------------------------------

    async def _start(
        self,
        agent: str,
        task: str | None,
        session: str | None,
        oneshot: bool,
        options: dict[str, Any],
        parent_run: str | None,
        request_span: Span | None,
    ) -> Run:
        await self.recover()
        policy = self.policy.current
        agent_policy = policy.agents.get(agent)
        if agent_policy is None:
            known = ", ".join(sorted(policy.agents)) or "none"
            raise ValueError(f"unknown agent '{agent}' (known: {known})")
        if parent_run is not None:
            await self.check_parent(policy, agent, parent_run)
        now = self._clock()
        run_id = f"run_{uuid.uuid4().hex[:16]}"
        span = None
        if request_span is None:
            span = request_span = self.tracing.run_span(agent, run_id, session)
        traced = ids(request_span)
        record = RunRecord(
            id=run_id,
            agent=agent,
            agent_type=agent_policy.type,
            created_at=now,
            updated_at=now,
            task=task,
            session=session,
            trace_id=traced[0] if traced is not None else uuid.uuid4().hex,
            trace_span=traced[1] if traced is not None else None,
            owner=self.owner,
            oneshot=oneshot,
            parent_run_id=parent_run,
        )
        try:
            await self.store.create_run(record)
            await self.audit.append("run.started", {"agent": agent, "task": task}, run_id)
            ctx = self._context(policy, record, elapsed=0.0, now=now, span=span)
            await self._seed_counters(ctx, now)
        except BaseException as exc:
            _end_failed(span, exc)
            raise
        return self._track(Run(ctx, **self._run_parts(), **options))

    async def check_parent(self, policy: Policy, agent: str, parent_run: str) -> None:
        """A parent run must exist and be of an agent of the same team (or the agent):
        corral.Denied otherwise."""
        parent = await self.store.get_run(parent_run)
        scope = policy.agents[agent].session_scope(agent)
        found = policy.agents.get(parent.agent) if parent is not None else None
        if parent is None or found is None or found.session_scope(parent.agent) != scope:
            why = "no such run" if parent is None else f"a run of agent '{parent.agent}'"
            raise Denied(
                f"parent run '{parent_run}' is {why}, not of this agent's team"
                f" ({scope.split(':', 1)[1]})",
                {"rule": f"agents.{agent}.team", "parent_run": parent_run},
            )

    async def _resume(self, run_id: str, options: dict[str, Any], traced: bool) -> Run:
        await self.recover()
        record = await self.store.get_run(run_id)
        if record is None:
            raise LookupError(f"no run '{run_id}' in the store")
        if record.status is not RunStatus.RUNNING:
            halted = record.status is RunStatus.HALTED
            hint = " (retry it with `corral dlq retry` first)" if halted else ""
            raise ValueError(f"run {run_id} is {record.status.value}{hint}")
        if run_id in self._runs:
            raise ValueError(f"run {run_id} is already active in this process")
        # Take the run over: settled first if its process died with calls in flight.
        dead = await find_dead(self.store, self._clock(), self._lease_ttl)
        claimed = await settle_orphan(
            self.store, self.audit, run_id, self.owner, dead,
            now=self._clock(), unowned=True, keep=True,
        )  # fmt: skip
        if claimed is None:
            raise RunInUse(f"run {run_id} is being served by another live process")
        record = claimed
        policy = self.policy.current
        now = self._clock()
        # Time the run was not running (crashed, or halted in the queue) does not count,
        # nor time its calls waited for a human.
        elapsed = (record.ended_at or record.updated_at) - record.created_at - record.waiting_s
        span = None
        if traced:  # a trace of its own, linked to the run's first
            first = None
            if record.trace_id is not None and record.trace_span is not None:
                first = (record.trace_id, record.trace_span)
            span = self.tracing.run_span(record.agent, run_id, record.session, first=first)
        try:
            return await self._resumed(record, policy, elapsed, now, span, options)
        except BaseException as exc:
            _end_failed(span, exc)
            raise

    async def _resumed(
        self,
        record: RunRecord,
        policy: Policy,
        elapsed: float,
        now: float,
        span: Span | None,
        options: dict[str, Any],
    ) -> Run:
        run_id = record.id
        ctx = self._context(policy, record, elapsed=elapsed, now=now, span=span)
        checkpoint = await self.store.last_checkpoint(run_id)
        ctx.call_seq = checkpoint.step if checkpoint else 0
        steps = await self.store.list_steps(run_id, last=ctx.recent.maxlen)
        ctx.step_seq = steps[-1].seq if steps else 0
        ctx.recent.extend(view_of(step) for step in steps)
        await self.audit.append(
            "run.resumed", {"checkpoint": checkpoint.id if checkpoint else None}, run_id
        )
        await self._seed_counters(ctx, now)
        state = checkpoint.state if checkpoint else None
        return self._track(Run(ctx, state=state, **self._run_parts(), **options))

    async def _seed_counters(self, ctx: RunContext, now: float) -> None:
        """Raise each in-process budget counter the run answers to, the first time this
        process uses it, to what the store says was spent against it: the run's own
        totals (task), all runs of the session (session), the steps of the current
        window of the agent type (fleet) or of everyone (global).

        In-process counters start at zero in a new process; without this a resumed run,
        or a session or fleet restarted, could spend its caps again. Only a shortfall is
        added, so nothing is counted twice. Shared counters hold every node's truth and
        are never overwritten by one node's view of it."""
        if self.counters.shared:
            return
        levels: dict[str, list[tuple[Cap, str]]] = {}
        for cap in ctx.caps:
            key = cap_key(cap, now)
            if key not in self._seeded:
                levels.setdefault(cap.level, []).append((cap, key))
        if not levels:
            return
        async with self._seeding:  # two runs opening at once must not both add the truth
            for level, caps in levels.items():
                caps = [(cap, key) for cap, key in caps if key not in self._seeded]
                if not caps:
                    continue
                spent = await self._spent(level, ctx, caps[0][0], now)
                if spent is not None:
                    units = {
                        "usd": math.ceil(round(spent.usd * MICRO_USD, 3)),
                        "tokens": spent.tokens,
                        "steps": spent.steps,
                        "tool_calls": spent.tool_calls,
                    }
                    values = await self.counters.get_many([key for _, key in caps])
                    for (cap, key), value in zip(caps, values, strict=True):
                        shortfall = units[cap.dimension] - value.used
                        if shortfall > 0:
                            await self.counters.add(key, shortfall, cap.window)
                self._seeded.update(key for _, key in caps)

    async def _spent(self, level: str, ctx: RunContext, cap: Cap, now: float) -> Spending | None:
        """What the store holds against one level of the run's caps; None if nothing can be
        there (a new run, or a new run's session of its own)."""
        run = ctx.record
        if level == "task" or (level == "session" and run.session is None):
            if not (run.steps or run.cost_usd or run.input_tokens or run.output_tokens):
                return None
            return Spending(
                run.cost_usd, run.input_tokens + run.output_tokens, run.steps, run.tool_calls
            )
        if level == "session":
            policy = ctx.policy
            scope = ctx.agent_policy.session_scope(run.agent)
            members = [n for n, a in policy.agents.items() if a.session_scope(n) == scope]
            return await self.store.spending(session=run.session, agents=members)
        agent_type = run.agent_type if level == "fleet" else None
        # A windowed cap holds the steps since its window began; an endless one, every run.
        since = None if cap.window is None else (now // cap.window) * cap.window
        return await self.store.spending(agent_type=agent_type, since=since)

    def _context(
        self,
        policy: Policy,
        record: RunRecord,
        *,
        elapsed: float,
        now: float,
        span: Span | None,
    ) -> RunContext:
        agent_policy = policy.agents[record.agent]
        # Sessions are the team's (or the agent's own): the same id sent by an agent of
        # another team names another session, with counters of its own.
        session = (
            f"{agent_policy.session_scope(record.agent)}/{record.session}"
            if record.session is not None
            else record.id
        )
        topup = dict(record.topup or {})
        kind = policy.agent_types[agent_policy.type]
        limits = [
            level.wall_clock
            for level in (kind.task, kind.session)
            if level is not None and level.wall_clock is not None
        ]
        deadline = None
        if limits:
            deadline = now + min(limits) + topup.get("wall_clock", 0.0) - elapsed
        self._ensure_adapters(policy)
        return RunContext(
            record=record,
            session=session,
            policy=policy,
            agent_policy=agent_policy,
            caps=build_caps(policy, agent_policy.type, record.id, session, topup),
            deadline=deadline,
            span=span,
            trace_context=None if span is None else self.tracing.in_span(span),
        )

    def _run_parts(self) -> dict[str, Any]:
        return {
            "pipeline": self._pipeline,
            "store": self.store,
            "audit": self.audit,
            "clock": self._clock,
            "on_end": self._untrack,
            "on_ended": self._ended,
        }

    def _ended(self, ctx: RunContext, halt: Halt | None, safe_fail: float | None) -> None:
        """A run ended: its span ends and its KPIs count (success as its agent type says)."""
        record = ctx.record
        outcome = halt.reason.value if halt is not None else "completed"
        kind = ctx.policy.agent_types.get(record.agent_type)
        succeeded = kind.succeeded(record.status.value, record.outcome) if kind else False
        ended = record.ended_at if record.ended_at is not None else self._clock()
        self.kpis.run_ended(
            record.agent, record.agent_type, outcome,
            succeeded=succeeded, cost_usd=record.cost_usd, tool_calls=record.tool_calls,
            seconds=max(0.0, ended - record.created_at - record.waiting_s), safe_fail=safe_fail,
        )  # fmt: skip
        span = ctx.span
        if span is not None:
            span.set_attributes(
                {"corral.cost_usd": record.cost_usd, "corral.step": record.steps,
                 "gen_ai.usage.cost": record.cost_usd}
            )  # fmt: skip
            if halt is not None:
                span.set_attribute("corral.halt.reason", outcome)
                span.set_attribute("error.type", outcome)
                span.set_status(Status(StatusCode.ERROR, f"{outcome}: {halt.message}"))
            span.end()

    def _track(self, run: Run) -> Run:
        self._runs[run.id] = run
        session = run.context.session
        self._in_session[session] = self._in_session.get(session, 0) + 1
        if self._watcher is None or self._watcher.done():
            # In a context of its own: not the current span of whoever started the first run.
            self._watcher = asyncio.create_task(
                self._watch_kills(), name="corral-kill-watcher", context=contextvars.Context()
            )
        return run

    async def _untrack(self, run: Run) -> None:
        """A run ended: forget it, and drop the counters nobody counts against any more
        (its task's; its session's if no other run of this process is in it). They are
        rebuilt from the store if the run or session comes back."""
        if self._runs.pop(run.id, None) is None:
            return
        ctx = run.context
        left = self._in_session[ctx.session] - 1
        if left:
            self._in_session[ctx.session] = left
        else:
            del self._in_session[ctx.session]
        shared = left > 0
        if not shared:
            self._loops.end_session(ctx.session)
        done = [
            cap.key
            for cap in ctx.caps
            if cap.level == "task" or (cap.level == "session" and not shared)
        ]
        if done:
            self._seeded.difference_update(done)
            await self.counters.drop(done)

    async def _watch_kills(self) -> None:
        """Poll the store for kill requests of this process's runs (one query per tick),
        renew this process's lease and settle approvals nobody waits on, while it has runs."""
        ticks = 0
        while self._runs:
            try:
                if self._clock() - self._renewed_at >= LEASE_RENEW_SECONDS:
                    await self._renew_lease()
                if ticks % APPROVAL_SWEEP_TICKS == 0:
                    await self.approvals.sweep(self.policy.current)
                if ticks % BASELINE_TICKS == 0:
                    await self.signals.refresh(self.store)
                requests = await self.store.kill_requests()
            except StoreError as exc:  # keep watching: a busy store must not end kill support
                log.warning("kill watcher could not read the store: %s", exc)
                requests = {}
            for run_id, at in requests.items():
                run = self._runs.get(run_id)
                if run is not None and run.context.kill_requested_at is None:
                    run.kill(at)
            ticks += 1
            await asyncio.sleep(KILL_POLL_SECONDS)

    def _ensure_adapters(self, policy: Policy) -> None:
        """One adapter per provider of the snapshot, all on the shared keep-alive client.

        After a reload, adapters of providers the new snapshot dropped stay, so runs
        started on the old snapshot can finish their calls."""
        if self._adapters_for is policy:
            return
        for name, provider in policy.providers.items():
            key = self._env.get(provider.api_key_env or "", "")
            kind = AnthropicAdapter if provider.kind == "anthropic" else OpenAIAdapter
            self._adapters[name] = kind(self._http, provider.base_url, key, provider.timeout)
        self._adapters_for = policy


def _end_failed(span: Span | None, exc: BaseException) -> None:
    """A run span whose run could not open: ended, with why."""
    if span is not None:
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(Status(StatusCode.ERROR, str(exc)))
        span.end()


class RunScope:
    """What `sup.run()` and `sup.resume()` return: `async with` it, or `await` it."""

    def __init__(self, open_run: Callable[[], Any]) -> None:
        self._open = open_run
        self._run: Run | None = None

    def __await__(self) -> Generator[Any, None, Run]:
        return self._open().__await__()  # type: ignore[no-any-return]

    async def __aenter__(self) -> Run:
        self._run = await self._open()
        return self._run

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        run = self._run
        assert run is not None
        if run.status is not RunStatus.RUNNING:
            return
        if exc is None:
            await run.complete()
        elif not isinstance(exc, Halted):
            await run.fail(exc)
