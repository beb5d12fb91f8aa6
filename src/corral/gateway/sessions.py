"""Which run a gateway request belongs to, and the tool calls its conversation reports.

A request with `X-Corral-Session` joins the run of that session (agent and session id
together name it), opening one on first sight; without it, the request is a run of its
own. Session runs live in memory while in use, come back from the store after a
restart, and complete after sitting idle, so memory stays bounded by active sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry.trace import Span

from corral.calls import Halted, HaltReason, RunStatus, ToolResult
from corral.gateway.wire import MAX_JSON_DEPTH, ClientError, too_deep
from corral.runtime.run import Run
from corral.runtime.supervisor import RunInUse, Supervisor

# How often idle sessions are looked for; a session ends within this long of its idle limit.
SWEEP_SECONDS = 5.0
MIN_SWEEP_SECONDS = 0.05  # a tiny idle limit must not turn the sweeper into a busy loop
SWEEP_BATCH = 256  # sessions completed at once by a sweep


@dataclass(frozen=True, slots=True)
class _Asked:
    """What the request opening a session's run brings to it."""

    task: str | None
    parent: str | None  # X-Corral-Parent-Run
    span: Span | None  # the request's, whose trace is the run's first


@dataclass(slots=True)
class _Session:
    run: Run
    used_at: float  # monotonic
    busy: int = 0  # requests in flight, which an idle sweep must not cut off
    outcome: str | None = None  # reported by a request: the run completes once not busy


class Sessions:
    def __init__(
        self,
        sup: Supervisor,
        *,
        idle: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sup = sup
        self._idle = idle
        self._clock = clock
        self._live: dict[tuple[str, str], _Session] = {}
        # One opening per session at a time: 200 first requests must open one run.
        self._opening: dict[tuple[str, str], asyncio.Future[_Session]] = {}
        # Sessions being ended: a request for one waits until its run is saved completed,
        # then opens a new run, rather than resuming the one being completed.
        self._closing: dict[tuple[str, str], asyncio.Future[None]] = {}
        # Sessions a request reported the outcome of, still serving requests in flight.
        self._ending: dict[tuple[str, str], _Session] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._live)

    async def enter(
        self,
        agent: str,
        session: str | None,
        task: str | None,
        parent: str | None = None,
        span: Span | None = None,
    ) -> Run:
        """The run for a request; pair with `leave`. Halted if the session's run is halted.

        `parent`: the run that started it (X-Corral-Parent-Run), for a run it opens;
        `span`: the request's, whose trace is a new run's first."""
        if session is None:
            scope = self._sup.run(
                agent=agent, task=task, halt_on_upstream_failure=False, oneshot=True,
                parent_run=parent, request_span=span,
            )  # fmt: skip
            return await scope
        key = (agent, session)
        entry = self._live.get(key)
        if entry is None or entry.run.status is not RunStatus.RUNNING:
            entry = await self._open(key, _Asked(task, parent, span), entry)
        entry.busy += 1
        entry.used_at = self._clock()
        return entry.run

    async def leave(self, run: Run, session: str | None, outcome: str | None = None) -> None:
        """A request is done with its run: a run of its own completes now, and so does a
        session's when the request reported the run's outcome (X-Corral-Outcome: the
        session's next request opens a new run)."""
        if session is None:
            if run.status is RunStatus.RUNNING:
                await run.complete(outcome)
            return
        key = (run.context.record.agent, session)
        entry = self._live.get(key)
        if entry is None or entry.run is not run:
            entry = self._ending.get(key)
            if entry is None or entry.run is not run:
                return
        entry.busy -= 1
        entry.used_at = self._clock()
        if outcome is not None and entry.outcome is None and run.status is RunStatus.RUNNING:
            # Forgotten now: the session's next request opens a new run, once this one is
            # saved completed (see _open), which waits for its requests in flight.
            entry.outcome = outcome
            del self._live[key]
            self._ending[key] = entry
            self._closing[key] = asyncio.get_running_loop().create_future()
        if entry.outcome is not None and entry.busy == 0 and self._ending.get(key) is entry:
            del self._ending[key]
            await self._complete(key, run, entry.outcome)

    async def _open(self, key: tuple[str, str], asked: _Asked, stale: _Session | None) -> _Session:
        if (closing := self._closing.get(key)) is not None:
            await asyncio.shield(closing)
        while (pending := self._opening.get(key)) is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():  # this request was cancelled, not the opening
                    raise
                # The request opening the session went away first: open it here instead.
        future: asyncio.Future[_Session] = asyncio.get_running_loop().create_future()
        self._opening[key] = future
        try:
            entry = await self._find_or_start(key, asked, stale)
            self._live[key] = entry
            future.set_result(entry)
            self._start_sweeper()
            return entry
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so a session nobody else waited on logs nothing
            raise
        finally:
            del self._opening[key]

    async def _find_or_start(
        self, key: tuple[str, str], asked: _Asked, stale: _Session | None
    ) -> _Session:
        """The session's newest run if it is running (resumed after a restart or a DLQ
        retry) or halted (its halt answers); a new run if it has none or it completed."""
        agent, session = key
        newest = await self._sup.store.list_runs(agent=agent, session=session, limit=1)
        record = newest[0] if newest else None
        if record is not None and record.status is RunStatus.HALTED:
            reason = HaltReason(record.halt_reason or HaltReason.ERROR.value)
            dead = await self._sup.store.dead_letter_for_run(record.id)
            packet = dead.packet if dead is not None else {}
            raise Halted(reason, record.error or reason.value, record.id, packet)
        if record is not None and record.status is RunStatus.RUNNING:
            halted_at = stale.run.context.record.ended_at if stale is not None else None
            if (
                stale is not None
                and stale.run.id == record.id
                and halted_at is not None
                and (record.updated_at <= halted_at)
            ):
                run = stale.run  # halted a moment ago and not yet saved: its halt answers
            else:
                try:
                    run = await self._sup.resume(
                        record.id, halt_on_upstream_failure=False, traced=False
                    )
                except RunInUse as busy:
                    raise ClientError(
                        409,
                        "conflict",
                        f"session '{session}' is open in another gateway process ({busy});"
                        " send its requests there, or retry once that process has ended",
                    ) from None
        else:
            run = await self._sup.run(
                agent=agent, task=asked.task, session=session, halt_on_upstream_failure=False,
                parent_run=asked.parent, request_span=asked.span,
            )  # fmt: skip
        return _Session(run, self._clock())

    def _start_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(
                self._sweep(), name="corral-session-sweeper", context=contextvars.Context()
            )

    async def _sweep(self) -> None:
        while self._live:
            await asyncio.sleep(min(SWEEP_SECONDS, max(self._idle, MIN_SWEEP_SECONDS)))
            await self.end_idle()

    async def end_idle(self, idle: float | None = None) -> int:
        """Complete and forget the sessions idle for `idle` seconds (default: the limit);
        returns how many."""
        limit = self._idle if idle is None else idle
        now = self._clock()
        ended = [
            (key, entry)
            for key, entry in self._live.items()
            if entry.busy == 0 and now - entry.used_at >= limit
        ]
        loop = asyncio.get_running_loop()
        closing = []
        for key, entry in ended:
            # Forgotten now, in this same step as the test above: a request arriving from
            # here on opens the session anew (after its run is saved, see _open).
            del self._live[key]
            if entry.run.status is RunStatus.RUNNING:
                self._closing[key] = loop.create_future()
                closing.append((key, entry.run))
        # All at once: one after another, each waiting for the store, fell behind the
        # sessions ending under load (and memory held the rest meanwhile).
        for start in range(0, len(closing), SWEEP_BATCH):
            batch = closing[start : start + SWEEP_BATCH]
            await asyncio.gather(*(self._complete(key, run) for key, run in batch))
        return len(ended)

    async def _complete(self, key: tuple[str, str], run: Run, outcome: Any = None) -> None:
        try:
            if run.status is RunStatus.RUNNING:  # a request in flight may have halted it
                await run.complete({"ended": "session idle"} if outcome is None else outcome)
        finally:
            self._closing.pop(key).set_result(None)

    async def close(self) -> None:
        """Stop sweeping; session runs stay running in the store, to resume on restart."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self._live.clear()


async def report_tool_results(run: Run, messages: Sequence[Mapping[str, Any]]) -> int:
    """Pass the tool calls whose results this request brings through the run's pipeline.

    These are the `tool` messages after the last assistant turn: earlier ones came with
    earlier requests. Each is keyed by its tool call id within the run, so a request
    sent again (a client retry) replays instead of counting twice. Returns how many.
    """
    last_assistant = -1
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "assistant":
            last_assistant = index
            break
    if last_assistant < 0:
        return 0
    asked = {
        call.get("id"): call
        for call in messages[last_assistant].get("tool_calls") or ()
        if isinstance(call, Mapping)
    }
    reported = 0
    for index in range(last_assistant + 1, len(messages)):
        message = messages[index]
        if message.get("role") != "tool":
            continue
        call_id = message.get("tool_call_id")
        call = asked.get(call_id)
        if call is None:
            raise ClientError(
                400,
                "invalid_request_error",
                f"messages[{index}].tool_call_id: no tool call '{call_id}' in the assistant "
                f"message at messages[{last_assistant}]",
                param=f"messages[{index}].tool_call_id",
            )
        function = call.get("function") or {}
        await run.report_tool(
            str(function.get("name")),
            _arguments(function.get("arguments")),
            ToolResult(message.get("content")),
            key=f"{run.id}:{call_id}",
            origin=str(call_id),
        )
        reported += 1
    return reported


def _arguments(text: Any) -> Mapping[str, Any]:
    """A tool call's arguments as the record shows them; text that is not a JSON object
    (or one nested past what a request body may be) is kept whole, as the model wrote it."""
    if isinstance(text, str):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return {"arguments": text}
        if isinstance(value, dict) and too_deep(value, MAX_JSON_DEPTH) is None:
            return value
    return {"arguments": text}
