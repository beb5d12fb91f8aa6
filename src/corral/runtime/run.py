"""A Run: one agent working on one task, every call passing the supervisor's pipeline."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from pydantic import BaseModel

from corral.calls import (
    UPSTREAM_REASONS,
    Halt,
    Halted,
    HaltReason,
    LLMCall,
    LLMResult,
    Result,
    RunStatus,
    StreamDelta,
    ToolCall,
    ToolResult,
    UpstreamUnavailable,
)
from corral.gates.base import Next, RunContext
from corral.runtime.packet import build_packet
from corral.state import Store
from corral.telemetry.audit import AuditLog


class Run:
    """Use through `Supervisor.run(...)` or `Supervisor.resume(...)`."""

    def __init__(
        self,
        ctx: RunContext,
        *,
        pipeline: Next,
        store: Store,
        audit: AuditLog,
        clock: Callable[[], float] = time.time,
        on_end: Callable[[Run], Awaitable[None]] | None = None,
        on_ended: Callable[[RunContext, Halt | None, float | None], None] | None = None,
        state: Any = None,
        halt_on_upstream_failure: bool = True,
    ) -> None:
        self._ctx = ctx
        # Told once, when the run has ended and no call of it is still in flight (calls
        # waiting for budget must still find the run's counters).
        self._on_end = on_end
        # Told at once when the run ends (its span, its KPIs): the halt, if it halted, and
        # the seconds from the rule firing to the halt recorded.
        self._on_ended = on_ended
        self._finished = False
        self._pipeline = pipeline
        self._store = store
        self._audit = audit
        self._clock = clock
        self._halted: Halted | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._halt_on_upstream_failure = halt_on_upstream_failure
        self.state = state  # the last checkpoint's state on a resumed run

    @property
    def id(self) -> str:
        return self._ctx.run_id

    @property
    def status(self) -> RunStatus:
        return self._ctx.record.status

    @property
    def context(self) -> RunContext:
        return self._ctx

    async def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int | None = None,
        schema: type[BaseModel] | Mapping[str, Any] | None = None,
        **params: Any,
    ) -> LLMResult:
        """Call a policy model or route. `max_tokens` may come back clamped by the budget.

        With `schema` (a pydantic model or a JSON schema) the answer must be JSON matching
        it: the output guard asks once for a repair, then halts with `guard.output`."""
        call = LLMCall(model, messages, params, max_tokens=max_tokens, schema=json_schema(schema))
        return await self.send(call)

    async def send(self, call: LLMCall) -> LLMResult:
        """Pass a prepared LLMCall through the pipeline (`chat` builds one for you)."""
        result = await self._call(call)
        assert isinstance(result, LLMResult)
        return result

    def stream(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int | None = None,
        schema: type[BaseModel] | Mapping[str, Any] | None = None,
        **params: Any,
    ) -> ChatStream:
        """Like `chat`, but yields StreamDeltas as they arrive; `.result` holds the answer."""
        call = LLMCall(model, messages, params, max_tokens=max_tokens, schema=json_schema(schema))
        return ChatStream(self, call)

    async def tool(
        self,
        name: str,
        args: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        reason: str | None = None,
        expected: str | None = None,
    ) -> Any:
        """Run a registered tool; a call whose key already ran returns its recorded result.

        If a human must approve it, this waits for the decision: a rejection raises
        `corral.Rejected` with the reviewer's feedback (the run goes on), a timeout halts
        the run or runs the rule's fallback tool. `reason` (why the agent makes the call)
        and `expected` (what it expects to happen) are shown to the reviewer."""
        call = ToolCall(name, args, idempotency_key, reason=reason, expected=expected)
        result = await self._call(call)
        assert isinstance(result, ToolResult)
        return result.value

    async def report_tool(
        self,
        name: str,
        args: Mapping[str, Any],
        result: ToolResult,
        *,
        key: str,
        origin: str | None = None,
    ) -> ToolResult:
        """Put a tool call the agent ran itself on the run: it passes the gates (allowlist,
        budgets, approvals, record) as any tool call. A second report with the same `key`
        replays. `origin` is the model's id of the tool call, which its approval names."""
        answer = await self._call(ToolCall(name, args, key, reported=result, origin=origin))
        assert isinstance(answer, ToolResult)
        return answer

    def progress(self, value: Any) -> None:
        """Tell Corral what the run has achieved so far (JSON-able: a count, a status, a
        dict); a change of it is progress to the loop gate's no-progress detector."""
        self._check_open()
        ctx = self._ctx
        if value != ctx.progress:
            ctx.progress = value
            ctx.progress_changes += 1

    async def artifact(self, handle: str) -> bytes:
        """The original content that context compaction replaced by `handle`."""
        found = await self._store.get_artifact(handle)
        if found is None or found.run_id != self.id:
            raise LookupError(f"run {self.id} has no artifact {handle!r}")
        return found.content

    async def checkpoint(self, state: Any) -> int:
        """Persist `state` (JSON-encodable); `Supervisor.resume` hands it back."""
        self._check_open()
        ctx = self._ctx
        saved = await self._store.add_checkpoint(ctx.run_id, ctx.call_seq, state)
        ctx.record = replace(ctx.record, last_checkpoint_id=saved.id)
        self.state = state
        await self._audit.append("checkpoint", {"id": saved.id, "call": ctx.call_seq}, ctx.run_id)
        return saved.id

    async def complete(self, outcome: Any = None) -> None:
        """End the run on purpose."""
        self._check_open()
        now = self._clock()
        ctx = self._ctx
        ctx.record = replace(
            ctx.record, status=RunStatus.COMPLETED, outcome=outcome, ended_at=now, updated_at=now
        )
        await self._ended()
        try:
            await self._store.save_run(ctx.record)
            await self._audit.append("run.completed", {"steps": ctx.record.steps}, ctx.run_id)
        finally:
            if self._on_ended is not None:
                self._on_ended(ctx, None, None)

    async def fail(self, exc: BaseException) -> Halted:
        """Halt with `error`: the agent's own code raised."""
        return await self._halt(
            Halt(HaltReason.ERROR, f"{type(exc).__name__}: {exc}", {"rule": "unhandled error"})
        )

    def kill(self, requested_at: float) -> None:
        """Called by the supervisor's watcher: halt at the next gate, cancel calls in flight."""
        self._ctx.kill_requested_at = requested_at
        for task in self._inflight:
            task.cancel("corral: run killed")

    async def _call(self, call: LLMCall | ToolCall) -> Result:
        self._check_open()
        ctx = self._ctx
        ctx.call_seq += 1
        if isinstance(call, ToolCall) and call.idempotency_key is None:
            call.idempotency_key = f"{ctx.run_id}:{ctx.call_seq}"
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            return await self._pipeline(call, ctx)
        except Halt as halt:
            if halt.reason in UPSTREAM_REASONS and not self._halt_on_upstream_failure:
                raise UpstreamUnavailable(halt.reason, halt.message, halt.detail) from None
            raise await self._halt(halt) from None
        except asyncio.CancelledError:
            if ctx.kill_requested_at is None:
                raise
            task.uncancel()
            raise await self._halt(self._killed()) from None
        finally:
            self._inflight.discard(task)
            if self._finished and not self._inflight:
                await self._quiet()

    async def _ended(self) -> None:
        self._ctx.record = replace(self._ctx.record, owner=None)
        self._finished = True
        if not self._inflight - {asyncio.current_task()}:
            await self._quiet()

    async def _quiet(self) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            await on_end(self)

    def _killed(self) -> Halt:
        return Halt(
            HaltReason.KILLED,
            "an operator killed the run during a call",
            {"rule": "kill switch", "requested_at": self._ctx.kill_requested_at},
        )

    def _check_open(self) -> None:
        if self._halted is not None:
            raise self._halted
        if self._ctx.record.status is not RunStatus.RUNNING:
            raise RuntimeError(f"run {self.id} is {self._ctx.record.status.value}")

    async def _halt(self, halt: Halt) -> Halted:
        if self._halted is not None:  # a concurrent call got here first: one halt per run
            return self._halted
        ctx = self._ctx
        if self._finished:
            # Completed while this call was in flight: the run stays completed (and counted
            # once); only this call is refused, with the halt's reason.
            return Halted(halt.reason, halt.message, ctx.run_id, {"reason": halt.reason.value})
        now = self._clock()
        packet = build_packet(ctx, halt, now)
        killed_at = ctx.kill_requested_at if halt.reason is HaltReason.KILLED else None
        safe_fail_ms = None if killed_at is None else (now - killed_at) * 1000
        if safe_fail_ms is not None:
            packet["time_to_safe_fail_ms"] = safe_fail_ms
        ctx.record = replace(
            ctx.record,
            status=RunStatus.HALTED,
            halt_reason=halt.reason.value,
            error=halt.message,
            ended_at=now,
            updated_at=now,
            time_to_safe_fail_ms=safe_fail_ms,
        )
        self._halted = Halted(halt.reason, halt.message, ctx.run_id, packet)
        await self._ended()
        try:
            dead_letter = await self._store.halt_run(ctx.record, packet)
            await self._audit.append(
                "run.halted",
                {
                    "reason": halt.reason.value,
                    "rule": packet["rule"],
                    "dead_letter": dead_letter.id,
                },
                ctx.run_id,
            )
        finally:
            if self._on_ended is not None:
                # Safe once the halt is on the record: from the kill request for a kill,
                # else from the moment the rule fired.
                if killed_at is not None:
                    safe = self._clock() - killed_at
                else:
                    safe = time.perf_counter() - halt.raised_at
                self._on_ended(ctx, halt, max(safe, 0.0))
        return self._halted


def json_schema(schema: type[BaseModel] | Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A pydantic model's JSON schema (worked out once per model), or the schema as given."""
    if schema is None or isinstance(schema, Mapping):
        return schema
    return _model_schema(schema)


@functools.lru_cache(maxsize=256)
def _model_schema(model: type[BaseModel]) -> Mapping[str, Any]:
    return model.model_json_schema()


class ChatStream:
    """`async for delta in run.stream(...)`: the call runs in its own task, feeding a queue.

    Every gate sees the streamed call as one call (the transport returns the whole
    answer at the end), so budgets, retries and records work as for `chat`.
    """

    _DONE = object()

    def __init__(self, run: Run, call: LLMCall) -> None:
        self._run = run
        self._call = call
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._task: asyncio.Task[Result] | None = None
        self.result: LLMResult | None = None

    async def _deliver(self, delta: StreamDelta) -> None:
        await self._queue.put(delta)

    async def _produce(self) -> Result:
        try:
            return await self._run._call(self._call)
        finally:
            self._queue.put_nowait(self._DONE)

    def __aiter__(self) -> AsyncIterator[StreamDelta]:
        return self._deltas()

    async def _deltas(self) -> AsyncIterator[StreamDelta]:
        self._call.sink = self._deliver
        self._task = asyncio.create_task(self._produce())
        try:
            while (item := await self._queue.get()) is not self._DONE:
                yield item
            result = await self._task  # raises Halted or the upstream error, if any
        finally:
            if not self._task.done():  # the caller stopped reading: stop the call
                self._task.cancel()
        assert isinstance(result, LLMResult)
        self.result = result
