"""The Supervisor: owns the policy, the state, the pipeline and the runs of one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from corral.calls import Halted, RunStatus
from corral.gates.allowlist import AllowlistGate
from corral.gates.base import Gate, Next, RunContext, compose
from corral.gates.breaker import BreakerGate
from corral.gates.budget import MICRO_USD, BudgetGate, build_caps
from corral.gates.context import ContextGate
from corral.gates.deadline import DeadlineGate
from corral.gates.idempotency import IdempotencyGate
from corral.gates.kill import KillSwitchGate
from corral.gates.loops import LoopGate
from corral.gates.ratelimit import RateLimitGate
from corral.gates.record import RecordGate, view_of
from corral.gates.retry import RetryGate
from corral.gates.route import RouteGate
from corral.policy import LivePolicy, Policy
from corral.providers.anthropic import AnthropicAdapter
from corral.providers.base import Adapter
from corral.providers.http import HttpClient
from corral.providers.openai import OpenAIAdapter
from corral.runtime.run import Run
from corral.runtime.transport import Transport
from corral.state import Counters, RunRecord, Store, StoreError, open_counters, open_store
from corral.telemetry.audit import AuditLog
from corral.tools.registry import Tool, describe

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("corral")

# How often the kill watcher asks the store for kill requests; a call in flight is
# cancelled within this long of `corral runs kill`.
KILL_POLL_SECONDS = 0.2


def pipeline_gates(
    store: Store, counters: Counters, audit: AuditLog, clock: Callable[[], float] = time.time
) -> list[Gate]:
    """The gates every call passes, outermost first (DESIGN.md's order).

    Budgets come first among the gates that cost or wait: a halt is decided before a
    call queues for a rate-limit share or is retried. The context gate's summaries go
    through the whole pipeline: `pipeline()` binds it once the gates are composed.
    """
    return [
        KillSwitchGate(),
        DeadlineGate(clock),
        RecordGate(store, audit, clock),
        AllowlistGate(),
        IdempotencyGate(store, clock),
        LoopGate(audit, clock),
        ContextGate(store, audit, clock),
        BudgetGate(counters, clock),
        RateLimitGate(counters),
        RouteGate(audit),
        RetryGate(counters, clock=clock),
        BreakerGate(counters, clock=clock),
    ]


def pipeline(gates: list[Gate], transport: Next) -> Next:
    """The gates composed around the transport, with the gates that call back into the
    pipeline (the context gate's summaries) bound to it."""
    composed = compose(gates, transport)
    for gate in gates:
        if isinstance(gate, ContextGate):
            gate.bind(composed)
    return composed


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
    ) -> None:
        self.policy = policy
        self.store = store
        self.counters = counters
        self.audit = AuditLog(store, clock)
        self._clock = clock
        self._env = os.environ if env is None else env
        self._tools: dict[str, Tool] = {}
        self._http = HttpClient()
        self._adapters: dict[str, Adapter] = {}
        self._adapters_for: Policy | None = None
        self._runs: dict[str, Run] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._pipeline: Next = pipeline(
            pipeline_gates(store, counters, self.audit, clock),
            Transport(self._adapters, self._tools),
        )

    @classmethod
    def from_policy(
        cls,
        path: str | Path,
        *,
        store: Store | None = None,
        counters: Counters | None = None,
        clock: Callable[[], float] = time.time,
        env: Mapping[str, str] | None = None,
    ) -> Supervisor:
        """Load the policy and open the store and counters it names (unless given)."""
        live = LivePolicy(path, env=env)
        return cls(
            live,
            store=store or open_store(live.current.store),
            counters=counters or open_counters(live.current.counters),
            clock=clock,
            env=env,
        )

    def tool(self, name: str | None = None) -> Callable[[F], F]:
        """Register a typed tool; its scope comes from the policy's `tools` section."""

        def register(fn: F) -> F:
            tool_name = name or fn.__name__
            declared = self.policy.current.tools.get(tool_name)
            if declared is None:
                known = ", ".join(sorted(self.policy.current.tools)) or "none"
                raise ValueError(
                    f"tool '{tool_name}' is not declared in the policy's tools (declared: {known})"
                )
            self._tools[tool_name] = describe(fn, tool_name, declared.scope)
            return fn

        return register

    def run(
        self,
        *,
        agent: str,
        task: str | None = None,
        session: str | None = None,
        halt_on_upstream_failure: bool = True,
    ) -> RunScope:
        """`async with sup.run(agent=..., task=...) as run:` — completes on a clean exit.

        With `halt_on_upstream_failure=False`, a call whose route has no model that
        answers raises UpstreamUnavailable and the run goes on, instead of halting."""
        options = {"halt_on_upstream_failure": halt_on_upstream_failure}
        return RunScope(lambda: self._start(agent, task, session, options))

    def resume(self, run_id: str, *, halt_on_upstream_failure: bool = True) -> RunScope:
        """Continue a run from its last checkpoint; tool calls that already ran replay."""
        options = {"halt_on_upstream_failure": halt_on_upstream_failure}
        return RunScope(lambda: self._resume(run_id, options))

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self._http.close()
        await self.counters.close()
        await self.store.close()

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- runs ----------------------------------------------------------------

    async def _start(
        self, agent: str, task: str | None, session: str | None, options: dict[str, Any]
    ) -> Run:
        policy = self.policy.current
        agent_policy = policy.agents.get(agent)
        if agent_policy is None:
            known = ", ".join(sorted(policy.agents)) or "none"
            raise ValueError(f"unknown agent '{agent}' (known: {known})")
        now = self._clock()
        run_id = f"run_{uuid.uuid4().hex[:16]}"
        record = RunRecord(
            id=run_id,
            agent=agent,
            agent_type=agent_policy.type,
            created_at=now,
            updated_at=now,
            task=task,
            session=session,
            trace_id=uuid.uuid4().hex,
        )
        await self.store.create_run(record)
        await self.audit.append("run.started", {"agent": agent, "task": task}, run_id)
        ctx = self._context(policy, record, elapsed=0.0, now=now)
        return self._track(Run(ctx, **self._run_parts(), **options))

    async def _resume(self, run_id: str, options: dict[str, Any]) -> Run:
        record = await self.store.get_run(run_id)
        if record is None:
            raise LookupError(f"no run '{run_id}' in the store")
        if record.status is not RunStatus.RUNNING:
            halted = record.status is RunStatus.HALTED
            hint = " (retry it with `corral dlq retry` first)" if halted else ""
            raise ValueError(f"run {run_id} is {record.status.value}{hint}")
        if run_id in self._runs:
            raise ValueError(f"run {run_id} is already active in this process")
        policy = self.policy.current
        now = self._clock()
        # Time the run was not running (crashed, or halted in the queue) does not count.
        elapsed = (record.ended_at or record.updated_at) - record.created_at
        ctx = self._context(policy, record, elapsed=elapsed, now=now)
        checkpoint = await self.store.last_checkpoint(run_id)
        ctx.call_seq = checkpoint.step if checkpoint else 0
        steps = await self.store.list_steps(run_id, last=ctx.recent.maxlen)
        ctx.step_seq = steps[-1].seq if steps else 0
        ctx.recent.extend(view_of(step) for step in steps)
        await self.audit.append(
            "run.resumed", {"checkpoint": checkpoint.id if checkpoint else None}, run_id
        )
        await self._restore_counters(ctx)
        state = checkpoint.state if checkpoint else None
        return self._track(Run(ctx, state=state, **self._run_parts(), **options))

    async def _restore_counters(self, ctx: RunContext) -> None:
        """Raise the run's task and session counters to at least what the run already spent.

        In-process counters start at zero in a new process; without this a resumed
        run could spend its caps again. Counters shared by several processes already
        hold it, so only the shortfall is added and nothing is counted twice.
        """
        run = ctx.record
        spent = {
            "usd": math.ceil(run.cost_usd * MICRO_USD),
            "tokens": run.input_tokens + run.output_tokens,
            "steps": run.steps,
            "tool_calls": run.tool_calls,
        }
        for cap in ctx.caps:
            if cap.level in ("task", "session"):
                shortfall = spent[cap.dimension] - (await self.counters.get(cap.key)).used
                if shortfall > 0:
                    await self.counters.add(cap.key, shortfall)

    def _context(
        self, policy: Policy, record: RunRecord, *, elapsed: float, now: float
    ) -> RunContext:
        agent_policy = policy.agents[record.agent]
        session = record.session or record.id
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
        )

    def _run_parts(self) -> dict[str, Any]:
        return {
            "pipeline": self._pipeline,
            "store": self.store,
            "audit": self.audit,
            "clock": self._clock,
            "on_end": self._untrack,
        }

    def _track(self, run: Run) -> Run:
        self._runs[run.id] = run
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch_kills(), name="corral-kill-watcher")
        return run

    def _untrack(self, run: Run) -> None:
        self._runs.pop(run.id, None)

    async def _watch_kills(self) -> None:
        """Poll the store for kill requests of this process's runs (one query per tick)."""
        while self._runs:
            try:
                requests = await self.store.kill_requests()
            except StoreError as exc:  # keep watching: a busy store must not end kill support
                log.warning("kill watcher could not read kill requests: %s", exc)
                requests = {}
            for run_id, at in requests.items():
                run = self._runs.get(run_id)
                if run is not None and run.context.kill_requested_at is None:
                    run.kill(at)
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
