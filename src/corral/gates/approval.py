"""Approval: a tool call that needs a human waits for one; in shadow mode a write is
recorded as a proposal instead of run.

It sits after the loop and context gates and before the budget hold, so a call that
waits holds no budget, and a call replayed by its idempotency key (it ran already)
never reaches it. Per tool call:

1. shadow mode (`agents.X.shadow`, `tools.X.shadow`): a write or irreversible call is
   recorded as a proposal and answered with the tool's shadow result; it still passes
   the budget as the real call would;
2. the tool's preview, if it has one, runs (a failing preview blocks the call);
3. the first matching rule (approval_need.py) decides whether a human must approve;
4. the approval is bound to the arguments as they will run: an approval of the same call
   (same idempotency key) with the same arguments is found again after a restart, and
   its decision is used or waited on;
5. approved: the call runs, with the reviewer's arguments if they edited them; rejected:
   `corral.Rejected` with the feedback (or a halt under `on_reject: halt`); timed out:
   a halt, or the fallback tool with the same arguments.

Where the agent runs its tools itself (the gateway), model answers are checked instead
(approval_answer.py), and a tool call it reports that needed an approval is refused
unless it is the call a human approved.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from corral.calls import Call, Halt, HaltReason, Rejected, Result, ToolCall, ToolResult
from corral.gates.approval_answer import AnswerCheck
from corral.gates.approval_need import Need, args_digest, find_need, is_gated, is_shadowed
from corral.gates.approval_requests import SHADOW_RESULT, Asked, Requests, refusal
from corral.gates.approval_wait import ApprovalWaiter
from corral.gates.base import Next, RunContext
from corral.state import ApprovalRecord, Store
from corral.telemetry.audit import AuditLog
from corral.telemetry.kpis import Kpis
from corral.telemetry.notify import Notifier
from corral.tools.registry import Tool


class ApprovalGate:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        tools: Mapping[str, Tool],
        clock: Callable[[], float] = time.time,
        notifier: Notifier | None = None,
        kpis: Kpis | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._tools = tools
        self._clock = clock
        self.waiter = ApprovalWaiter(store, audit, clock, notifier)
        self._requests = Requests(store, audit, self.waiter, clock, kpis)
        self._answers = AnswerCheck(store, audit, self._requests, clock)

    async def __call__(self, call: Call, ctx: RunContext, next: Next) -> Result:
        if call.kind == "llm":
            if ctx.tools_in_client:
                return await self._answers(call, ctx, next)
            return await next(call, ctx)
        if not is_gated(ctx.policy, call.name, ctx.agent_policy.shadow):
            return await next(call, ctx)
        if call.reported is not None:
            return await self._reported(call, ctx, next)
        return await self._tool(call, ctx, next)

    async def _tool(self, call: ToolCall, ctx: RunContext, next: Next) -> Result:
        tool = self._tools.get(call.name)
        if tool is None:  # the transport says it is not registered
            return await next(call, ctx)
        # What an approval is bound to is what runs: the coerced copy, not the caller's
        # dict (which it may still change while the call waits).
        call.args = args = tool.coerce(call.args)
        if is_shadowed(ctx.policy, call.name, ctx.agent_policy.shadow):
            return await self._shadow(call, ctx, next, tool, args)
        # The dry run goes first only if a rule reads it; else only for a reviewer.
        reads_preview = "preview" in ctx.policy.tool_plans[call.name].variables
        preview = None
        if tool.preview is not None and reads_preview:
            preview = await self._preview(tool, args)
        need = find_need(ctx, call.name, args, preview)
        if need is None:
            return await next(call, ctx)
        record = await self._requests.existing(call.idempotency_key, call.name, args)
        if record is None:
            if tool.preview is not None and not reads_preview:
                preview = await self._preview(tool, args)
            asked = Asked(
                call.name,
                args,
                call.idempotency_key,
                reason=call.reason,
                expected=call.expected,
                rollback=tool.rollback,
                preview=preview,
                has_preview=tool.preview is not None,
                schema=tool.schema(),
            )
            record = await self._requests.open(ctx, asked, need, "sdk")
        decided = await self._requests.wait(record, need, ctx, hold=None)
        assert decided is not None  # no hold: it waits for the decision or the timeout
        return await self._decided(decided, need, call, ctx, next)

    async def _decided(
        self, decided: ApprovalRecord, need: Need, call: ToolCall, ctx: RunContext, next: Next
    ) -> Result:
        halt = refusal(decided, need)
        if halt is not None:
            raise halt
        if decided.status == "rejected":
            raise Rejected(call.name, decided.note or "", decided.id)
        if decided.status == "timeout":  # on_timeout: fallback (the others halted)
            fallback = need.action.fallback_tool
            assert fallback is not None  # the policy refuses fallback without fallback_tool
            await self._audit.append(
                "approval.fallback",
                {"id": decided.id, "tool": call.name, "instead": fallback},
                ctx.run_id,
            )
            call.name = fallback
            # The fallback answers to its own rules: it may need a human too.
            return await self._tool(call, ctx, next)
        if decided.approved_args is not None:
            call.args = decided.approved_args  # what the reviewer approved is what runs
        return await next(call, ctx)

    async def _preview(self, tool: Tool, args: Mapping[str, Any]) -> Any:
        """The tool's dry run, for the rules and the reviewer; a preview that fails (or
        gives what JSON cannot hold) blocks the call: nobody decides blind."""
        try:
            shown = await tool.run_preview(args)
            orjson.dumps(shown)
        except Exception as exc:
            raise Halt(
                HaltReason.POLICY_DENIED,
                f"the preview of '{tool.name}' failed ({type(exc).__name__}: {exc}), "
                "so the call is blocked",
                {"rule": f"tools.{tool.name}.preview", "error": str(exc)},
            ) from exc
        return shown

    async def _shadow(
        self, call: ToolCall, ctx: RunContext, next: Next, tool: Tool, args: Mapping[str, Any]
    ) -> Result:
        """Record the proposal; the call goes on down the pipeline (budgets count it as the
        real call would count) with its stand-in result, which the transport returns."""
        if tool.shadow is not None:
            result = await tool.run_shadow(args)
        else:
            result = {"status": SHADOW_RESULT, "tool": call.name}
        await self._requests.propose(ctx, call.name, args, result)
        call.reported = ToolResult(result)
        return await next(call, ctx)

    async def _reported(self, call: ToolCall, ctx: RunContext, next: Next) -> Result:
        """A tool call the agent ran itself and reports: it must be one a human approved,
        if it needed approval (the answer check held it for one)."""
        agent = ctx.record.agent
        if is_shadowed(ctx.policy, call.name, ctx.agent_policy.shadow):
            raise Halt(
                HaltReason.POLICY_DENIED,
                f"agent '{agent}' is in shadow mode, yet reports running '{call.name}'",
                {"rule": f"agents.{agent}.shadow", "tool_call": call.origin},
            )
        if self._answers.delivered_unheld(agent, call.origin, call.args):
            return await next(call, ctx)
        need = find_need(ctx, call.name, call.args)
        if need is None or await self._admitted(call, agent):
            return await next(call, ctx)
        raise Halt(
            HaltReason.POLICY_DENIED,
            f"tool call {call.origin or '?'} ({call.name}) needed an approval under "
            f"{need.source} and was not approved",
            {"rule": need.source, "tool_call": call.origin},
        )

    async def _admitted(self, call: ToolCall, agent: str) -> bool:
        """Whether a human approved this call (its id, for this agent, these arguments),
        or it is the fallback its approval's timeout called for."""
        if call.origin is None:
            return False
        digest = args_digest(call.args)
        for found in await self._store.find_approvals(call_key=call.origin):
            if found.agent != agent:
                continue
            if found.status == "approved":
                ran = found.args if found.approved_args is None else found.approved_args
                if args_digest(ran) == digest:
                    return True
            elif found.status == "timeout":
                fallback = (found.panel or {}).get("fallback_tool")
                if fallback == call.name and args_digest(found.args) == digest:
                    return True
        return False
