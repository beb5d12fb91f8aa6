"""Record: every call becomes a step row (with the run's new totals) and an audit entry.

It wraps the gates that may refuse a call, so a refused, failed or replayed call
is on the record too, with its status.

A store that redacts what it keeps (Store.redactor) redacts the step itself; the gate
redacts the view it keeps in memory (RunContext.recent) with the same redactor, since
escalation packets, which people read, are built from those views.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from corral.calls import ApprovalPending, Call, Halt, LLMResult, Result, ToolResult
from corral.gates.base import Next, RunContext, StepView
from corral.providers.base import ProviderError
from corral.state import StepRecord, StepStatus, Store
from corral.telemetry.audit import AuditLog


class RecordGate:
    def __init__(
        self, store: Store, audit: AuditLog, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self._redact = store.redactor

    async def __call__(self, call: Call, ctx: RunContext, next: Next) -> Result:
        started = self._clock()
        try:
            result = await next(call, ctx)
        except Halt as halt:
            await self._write(call, ctx, started, halt.spent, "halted", str(halt))
            raise
        except ApprovalPending as pending:
            # Answered, and held for a human: the step is the model call that was paid
            # for; the same request sent again while it is held made no call of its own.
            held: StepStatus = "ok" if pending.spent is not None else "replayed"
            await self._write(call, ctx, started, pending.spent, held, str(pending))
            raise
        except asyncio.CancelledError:
            killed = ctx.kill_requested_at is not None
            status: StepStatus = "halted" if killed else "error"
            await self._write(
                call, ctx, started, None, status, "cancelled: run killed" if killed else "cancelled"
            )
            raise
        except ProviderError as exc:
            # A stream cut mid-way consumed tokens all the same: its step shows what it cost.
            spent = None
            if exc.usage is not None:
                spent = LLMResult(
                    "", exc.usage, getattr(call, "target", None) or "", cost_usd=exc.cost_usd
                )
            await self._write(call, ctx, started, spent, "error", f"{type(exc).__name__}: {exc}")
            raise
        except Exception as exc:
            await self._write(call, ctx, started, None, "error", f"{type(exc).__name__}: {exc}")
            raise
        replayed = result.replayed
        await self._write(call, ctx, started, result, "replayed" if replayed else "ok", None)
        return result

    async def _write(
        self,
        call: Call,
        ctx: RunContext,
        started: float,
        result: Result | None,
        status: StepStatus,
        error: str | None,
    ) -> None:
        ctx.step_seq += 1
        run = ctx.record
        tokens_in = tokens_out = 0
        cost = 0.0
        output: Any = None
        model_used = None
        if (
            isinstance(result, LLMResult)
            and status != "ok"
            and not (result.text or result.tool_calls)
        ):
            # A stream cut mid-way (then maybe halted): only what it consumed.
            tokens_in, tokens_out = result.usage.input_tokens, result.usage.output_tokens
            cost, model_used = result.cost_usd, result.model or None
        elif isinstance(result, LLMResult):
            tokens_in, tokens_out = result.usage.input_tokens, result.usage.output_tokens
            cost, model_used = result.cost_usd, result.model
            output = {
                "text": result.text,
                "tool_calls": [
                    {"id": t.id, "name": t.name, "arguments": t.arguments}
                    for t in result.tool_calls
                ],
            }
        elif isinstance(result, ToolResult):
            output = result.value
        if call.kind == "tool":
            name, given = call.name, dict(call.args)
        else:
            name, given = call.model, {**_new_messages(call.messages, ctx), **call.params}
        ended = self._clock()
        # As in the budget: a call counts as a step once it was answered (a failed call's
        # hold is released; a cut stream's tokens and cost count, but it made no step), even
        # if a halt followed the answer (then its output is on the step: see spending()).
        counted = status == "ok" or (status == "halted" and output is not None)
        ctx.record = run = replace(
            run,
            updated_at=ended,
            steps=run.steps + counted,
            tool_calls=run.tool_calls + (counted and call.kind == "tool"),
            input_tokens=run.input_tokens + tokens_in,
            output_tokens=run.output_tokens + tokens_out,
            cost_usd=run.cost_usd + cost,
        )
        step = StepRecord(
            run_id=run.id,
            seq=ctx.step_seq,
            kind=call.kind,
            name=name,
            input=given,
            started_at=started,
            ended_at=ended,
            output=output,
            status=status,
            error=error,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost_usd=cost,
            idempotency_key=call.idempotency_key if call.kind == "tool" else None,
            model_used=model_used,
        )
        entry = self._audit.seal(
            "step",
            {"seq": step.seq, "kind": step.kind, "name": name, "status": status, "usd": cost},
            run.id,
        )
        # One transaction for the step, the run's totals and the audit entry, queued rather
        # than awaited: the answer need not wait for the disk (a third of the gateway's time
        # per call at concurrency 1), and the store keeps it in order with every later
        # read and write. Queued synchronously, so a kill landing now cannot drop it.
        self._store.queue_step(run, step, entry, settles=call.inflight)
        call.inflight = None
        view = view_of(step)
        if self._redact is not None:
            kept = self._redact
            view = replace(
                view, input=kept(view.input), output=kept(view.output), error=kept(view.error)
            )
        ctx.recent.append(view)


def _new_messages(messages: Sequence[Mapping[str, Any]], ctx: RunContext) -> dict[str, Any]:
    """The messages a model call adds to the run's previous one.

    A conversation grows by a turn or two per call and is sent whole each time (the
    gateway's clients always do): storing it whole in every step would make a run's
    record grow with the square of its length. When the call's messages begin with the
    previous call's, the step stores `messages_from` (how many it shares) and the rest;
    at least the last message, so a step always shows what it was asked.
    """
    # A copy: an SDK caller appends to its own list between calls, and the comparison
    # below must see the messages as they were sent.
    sent = list(messages)
    previous = ctx.scratch.get(_SCRATCH)
    ctx.scratch[_SCRATCH] = sent
    # Not a continuation (a new conversation, or compacted): stored whole.
    shared = len(previous) if previous and sent[: len(previous)] == previous else 0
    shared = min(shared, len(sent) - 1)  # at least the last message is kept
    if shared <= 0:
        return {"messages": sent}
    return {"messages_from": shared, "messages": sent[shared:]}


_SCRATCH = "record.messages"


def view_of(step: StepRecord) -> StepView:
    """A step as the packet shows it: a tool's input, or a model call's last message."""
    shown = step.input
    if step.kind == "llm":
        messages = step.input.get("messages") or []
        total = step.input.get("messages_from", 0) + len(messages)
        shown = {"messages": total, "last": messages[-1] if messages else None}
    return StepView(step.seq, step.kind, step.name, shown, step.output, step.status, step.error)
