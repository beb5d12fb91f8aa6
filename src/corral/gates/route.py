"""Route: try the models of the call's fallback chain in order; the first that answers wins.

A model is left for the next one when it is unavailable, timing out or rate
limited after its retries, when its breaker is open, or when the prompt is too
long for it (then only models with a larger window are tried). A streamed call
never falls back once its first byte reached the caller: the caller would get
two answers spliced together. Each fallback is an audit event on the run; the
answer names the model that gave it.
"""

from __future__ import annotations

from corral.calls import Call, Halt, HaltReason, LLMCall, Result
from corral.gates.base import Next, RunContext
from corral.gates.breaker import CircuitOpen
from corral.providers.base import FailureKind, ProviderError
from corral.telemetry.audit import AuditLog
from corral.telemetry.kpis import Kpis

FALL_BACK_ON = frozenset({FailureKind.RATE_LIMITED, FailureKind.UNAVAILABLE, FailureKind.TIMEOUT})


class RouteGate:
    def __init__(self, audit: AuditLog, kpis: Kpis | None = None) -> None:
        self._audit = audit
        self._kpis = kpis

    async def __call__(self, call: Call, ctx: RunContext, next: Next) -> Result:
        if call.kind == "tool":
            return await next(call, ctx)
        names = ctx.policy.routes.get(call.model, (call.model,))
        tried: list[dict[str, str]] = []
        needs_window = 0  # after a context-length refusal: only larger windows are worth a try
        for name in names:
            if ctx.policy.models[name].context_window <= needs_window:
                continue
            call.target = name
            if tried and self._kpis is not None:  # moving on to the next model
                self._kpis.fallback(ctx.record.agent, ctx.record.agent_type)
            try:
                return await next(call, ctx)
            except CircuitOpen as exc:
                failure = "circuit_open"
                detail = str(exc)
            except ProviderError as exc:
                if call.delivered or (
                    exc.kind not in FALL_BACK_ON and exc.kind is not FailureKind.CONTEXT_LENGTH
                ):
                    raise
                if exc.kind is FailureKind.CONTEXT_LENGTH:
                    needs_window = ctx.policy.models[name].context_window
                failure = exc.kind.value
                detail = exc.message
            tried.append({"model": name, "failure": failure, "detail": detail[:200]})
            call.fallback_from = name
            await self._audit.append(
                "run.fallback", {"route": call.model, "model": name, "failure": failure}, ctx.run_id
            )
        raise self._exhausted(call, tried)

    def _exhausted(self, call: LLMCall, tried: list[dict[str, str]]) -> Halt:
        failures = {attempt["failure"] for attempt in tried}
        if failures == {"circuit_open"}:
            reason = HaltReason.CIRCUIT_OPEN
        elif tried[-1]["failure"] == FailureKind.CONTEXT_LENGTH.value:
            reason = HaltReason.CONTEXT_OVERFLOW
        else:
            reason = HaltReason.PROVIDER_UNAVAILABLE
        models = ", ".join(f"{a['model']} ({a['failure']})" for a in tried)
        return Halt(
            reason,
            f"no model on '{call.model}' answered: {models}",
            {"rule": f"routes.{call.model}", "tried": tried},
        )
