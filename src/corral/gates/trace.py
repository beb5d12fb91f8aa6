"""Trace: each call is a `chat {model}` or `execute_tool {tool}` span, and its figures
are the GenAI client metrics and the per-call KPIs.

It sits just outside the record gate, so a span and a step row are one for one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode

from corral.calls import ApprovalPending, Call, Halt, HaltReason, LLMResult, Rejected, Result
from corral.gates.base import Next, RunContext
from corral.providers.base import ProviderError
from corral.telemetry.anomaly import Signals
from corral.telemetry.kpis import Kpis
from corral.telemetry.tracing import CURRENT, Tracing, current_span, provider_name


class TraceGate:
    def __init__(self, tracing: Tracing, kpis: Kpis, signals: Signals) -> None:
        self._tracing = tracing
        self._kpis = kpis
        self._signals = signals

    async def __call__(self, call: Call, ctx: RunContext, next: Next) -> Result:
        tracing = self._tracing
        record = ctx.record
        if call.kind == "llm":
            name, kind = f"chat {call.model}", SpanKind.CLIENT
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": call.model,
            }
        else:
            name, kind = f"execute_tool {call.name}", SpanKind.INTERNAL
            attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": call.name}
            if call.origin is not None:
                attributes["gen_ai.tool.call.id"] = call.origin
        # The run's id is on the run's span (the gateway request's): not again per call.
        if record.session is not None:
            attributes["gen_ai.conversation.id"] = record.session
        # The run's span in flight (a call's, for a call made inside it; the request's at
        # the gateway), else the SDK run's own span.
        parent = current_span(record.id)
        context = ctx.trace_context if parent is None else tracing.in_span(parent)
        span = tracing.tracer.start_span(name, context, kind, attributes=attributes)
        if tracing.capture_content:
            _content_in(tracing, span, call)
        token = CURRENT.set((record.id, span))
        started = time.perf_counter()
        result: Result | None = None
        error = ""
        try:
            result = await next(call, ctx)
            return result
        except Halt as halt:
            error = halt.reason.value
            span.set_attributes(_halt_attributes(halt))
            result = halt.spent
            raise
        except ApprovalPending as pending:
            span.set_attribute("corral.approval.id", ", ".join(pending.approval_ids))
            result = pending.spent
            raise
        except Rejected as rejected:
            error = "approval.rejected"
            span.set_attribute("corral.approval.id", rejected.approval_id)
            raise
        except ProviderError as exc:
            error = exc.kind.value
            raise
        except asyncio.CancelledError:
            error = HaltReason.KILLED.value if ctx.kill_requested_at is not None else "cancelled"
            raise
        except BaseException as exc:
            error = type(exc).__name__
            raise
        finally:
            CURRENT.reset(token)
            seconds = time.perf_counter() - started
            # One set_attributes per span: each call takes the span's lock and validates.
            ended: dict[str, Any] = {"corral.step": ctx.step_seq}
            if error:
                ended["error.type"] = error
                span.set_status(Status(StatusCode.ERROR, error))
            if call.kind == "llm":
                self._answered(call, ctx, ended, result, seconds, error)
            else:
                self._signals.tool_done(ctx, call.name, error)
                if tracing.capture_content and result is not None:
                    shown = tracing.content(getattr(result, "value", None))
                    if shown is not None:
                        ended["gen_ai.tool.call.result"] = shown
            span.set_attributes(ended)
            span.end()
            self._signals.step(ctx)

    def _answered(
        self,
        call: Any,
        ctx: RunContext,
        figures: dict[str, Any],
        result: Result | None,
        seconds: float,
        error: str,
    ) -> None:
        """The model call's figures onto `figures` (the span's), and into the metrics."""
        policy = ctx.policy
        answered = result if isinstance(result, LLMResult) else None
        model = answered.model if answered is not None and answered.model else call.target
        provider = provider_name(policy, model) or ""
        response_model = ""
        if model:
            found = policy.models.get(model)
            response_model = found.model if found is not None else model
        usage = answered.usage if answered is not None else None
        if provider:
            figures["gen_ai.provider.name"] = provider
        if response_model:
            figures["gen_ai.response.model"] = response_model
        if usage is not None:
            figures["gen_ai.usage.input_tokens"] = usage.input_tokens
            figures["gen_ai.usage.output_tokens"] = usage.output_tokens
            if usage.cache_read_tokens:
                figures["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read_tokens
            if usage.cache_write_tokens:
                figures["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
        if answered is not None:
            figures["corral.cost_usd"] = figures["gen_ai.usage.cost"] = answered.cost_usd
            if answered.finish_reason:
                figures["gen_ai.response.finish_reasons"] = (answered.finish_reason,)
            if self._tracing.capture_content:
                shown = self._tracing.content(answered.text)
                if shown is not None:
                    figures["gen_ai.output.messages"] = shown
        if call.budget_left_usd is not None:
            figures["corral.budget.remaining_usd"] = call.budget_left_usd
        state = ctx.scratch.get("context")
        record = ctx.record
        self._kpis.model_call(
            record.agent, record.agent_type, provider, call.model, response_model,
            usage, seconds, error, None if state is None else state.utilization,
        )  # fmt: skip


def _halt_attributes(halt: Halt) -> dict[str, str]:
    """The halt, and the rule behind it under the attribute its kind of rule has."""
    reason = halt.reason.value
    found = {"corral.halt.reason": reason}
    rule = halt.detail.get("rule")
    if reason.startswith("loop."):
        found["corral.loop.detector"] = reason
    elif reason.startswith("guard.") and isinstance(rule, str):
        found["corral.guard.rule"] = rule
    elif reason.startswith("approval.") and isinstance(halt.detail.get("approval"), str):
        found["corral.approval.id"] = halt.detail["approval"]
    return found


def _content_in(tracing: Tracing, span: Any, call: Call) -> None:
    if call.kind == "llm":
        shown = tracing.content(list(call.messages))
        if shown is not None:
            span.set_attribute("gen_ai.input.messages", shown)
    else:
        shown = tracing.content(dict(call.args))
        if shown is not None:
            span.set_attribute("gen_ai.tool.call.arguments", shown)
