"""The bottom of the pipeline: send an LLM call to its provider, or run a tool."""

from __future__ import annotations

from collections.abc import Mapping
from time import perf_counter

from corral.calls import Call, LLMResult, Result, ToolResult
from corral.gates.base import RunContext
from corral.providers.base import Adapter
from corral.telemetry.tracing import attach, current_span, detach
from corral.tools.registry import Tool


class Transport:
    """Calls the model the route gate chose (the chain's first when no route gate ran)."""

    def __init__(self, adapters: Mapping[str, Adapter], tools: Mapping[str, Tool]) -> None:
        self._adapters = adapters
        self._tools = tools

    async def __call__(self, call: Call, ctx: RunContext) -> Result:
        if call.kind == "tool":
            if call.reported is not None:
                return call.reported
            tool = self._tools.get(call.name)
            if tool is None:
                known = ", ".join(sorted(self._tools)) or "none"
                raise LookupError(f"no tool '{call.name}' is registered (registered: {known})")
            span = current_span(ctx.run_id)
            if span is None or not span.is_recording():
                return ToolResult(await tool.invoke(call.args, call.idempotency_key))
            token = attach(span)  # the spans the tool makes nest under its execute_tool
            try:
                return ToolResult(await tool.invoke(call.args, call.idempotency_key))
            finally:
                detach(token)
        policy = ctx.policy
        name = call.target or policy.routes.get(call.model, (call.model,))[0]
        model = policy.models[name]
        call.upstream_started = started = perf_counter()
        try:
            result: LLMResult = await self._adapters[model.provider].complete(name, model, call)
        finally:
            call.upstream_seconds += perf_counter() - started
        return result
