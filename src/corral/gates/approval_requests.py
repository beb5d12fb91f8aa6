"""Approval requests: the record a reviewer decides on (with everything they need to see),
its audit entry and notification, and what each decision means for the call.

Shared by the two places a call waits for a human: a tool call the SDK runs, and a tool
call in a model's answer at the gateway, which the agent would run itself.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from corral.calls import Halt, HaltReason
from corral.gates.approval_need import Need, args_digest
from corral.gates.approval_wait import ApprovalWaiter
from corral.gates.base import RunContext
from corral.state import ApprovalRecord, ProposalRecord, Store
from corral.telemetry.audit import AuditLog
from corral.telemetry.kpis import Kpis

LAST_STEPS = 5  # the steps of the run a reviewer is shown
SHADOW_RESULT = "proposed, not executed"  # what a shadowed call answers, unless declared


@dataclass(frozen=True, slots=True)
class Asked:
    """A tool call as the reviewer sees it."""

    tool: str
    args: Any  # as they will run: validated and coerced where the tool is known
    call_key: str | None  # finds the approval again for the same call
    reason: str | None = None
    expected: str | None = None
    rollback: str | None = None
    preview: Any = None
    has_preview: bool = False
    schema: Any = None
    request_key: str | None = None
    answer: Any = None


class Requests:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        waiter: ApprovalWaiter,
        clock: Callable[[], float] = time.time,
        kpis: Kpis | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self.waiter = waiter
        self._clock = clock
        self._kpis = kpis

    async def existing(self, call_key: str | None, tool: str, args: Any) -> ApprovalRecord | None:
        """The newest approval of this same call (key and tool) with these same arguments,
        if any: what a resumed run finds after its process died while it waited."""
        if call_key is None:
            return None
        digest = args_digest(args)
        for found in await self._store.find_approvals(call_key=call_key):
            if found.tool == tool and found.args_hash == digest:
                return found
        return None

    async def open(self, ctx: RunContext, asked: Asked, need: Need, door: str) -> ApprovalRecord:
        """Store a pending approval, audit it and post it to the webhook."""
        now = self._clock()
        record = ApprovalRecord(
            id=f"apr_{uuid.uuid4().hex[:16]}",
            run_id=ctx.run_id,
            step=ctx.call_seq,
            tool=asked.tool,
            args=asked.args,
            rule=need.source,
            requested_at=now,
            timeout_at=now + need.action.timeout,
            agent=ctx.record.agent,
            call_key=asked.call_key,
            request_key=asked.request_key,
            args_hash=args_digest(asked.args),
            panel=panel(ctx, asked, need, door),
            answer=asked.answer,
        )
        await self._store.add_approval(record)
        detail = {"id": record.id, "tool": asked.tool, "rule": need.source}
        if need.error is not None:
            detail["rule_error"] = need.error
        await self._audit.append("approval.requested", detail, ctx.run_id)
        if self._kpis is not None:
            self._kpis.approval_requested(ctx.record.agent, ctx.record.agent_type)
        webhook = ctx.policy.approvals_notify.webhook
        self.waiter.notify(record, record.timeout_at, ctx.policy, url=webhook)
        return record

    async def propose(self, ctx: RunContext, tool: str, args: Any, result: Any) -> ProposalRecord:
        """Record a write that shadow mode did not run, and the result given instead."""
        proposal = ProposalRecord(
            id=f"prp_{uuid.uuid4().hex[:16]}",
            run_id=ctx.run_id,
            agent=ctx.record.agent,
            tool=tool,
            args=dict(args),
            scope=ctx.policy.tools[tool].scope,
            proposed_at=self._clock(),
            result=result,
        )
        await self._store.add_proposal(proposal)
        await self._audit.append("shadow.proposed", {"id": proposal.id, "tool": tool}, ctx.run_id)
        return proposal

    async def wait(
        self, record: ApprovalRecord, need: Need, ctx: RunContext, *, hold: float | None
    ) -> ApprovalRecord | None:
        """Wait for the decision (None if `hold` seconds pass first); the time waited is
        the run's `waiting_s`, which its wall-clock cap does not count."""
        ctx.human_wait_started(self._clock())
        try:
            decided = await self.waiter.wait(record, need.action, ctx.policy, hold=hold)
        finally:
            ctx.human_wait_ended(self._clock())
        if decided is not None and decided.decided_at is not None and self._kpis is not None:
            seconds = decided.decided_at - decided.requested_at
            self._kpis.approval_decided(decided.id, ctx.record.agent_type, decided.status, seconds)
        return decided


def panel(ctx: RunContext, asked: Asked, need: Need, door: str) -> dict[str, Any]:
    """What a reviewer sees: the exact action, why, what should happen and how to undo
    it, the rule that asked, and where the run stands."""
    record = ctx.record
    action = need.action
    shown: dict[str, Any] = {
        "agent": record.agent,
        "agent_type": record.agent_type,
        "session": record.session,
        "task": record.task,
        "tool": asked.tool,
        "scope": ctx.policy.tools[asked.tool].scope,
        "args": asked.args,
        "reason": asked.reason,
        "expected": asked.expected,
        "rollback": asked.rollback or ctx.policy.tools[asked.tool].rollback,
        "rule": {"source": need.source, "when": need.when, "error": need.error},
        "timeout": action.timeout,
        "on_timeout": action.on_timeout,
        "escalate_to": action.escalate_to,
        "escalate_timeout": action.escalate_timeout,
        "fallback_tool": action.fallback_tool,
        "on_reject": action.on_reject,
        "run": {
            "id": record.id,
            "cost_usd": round(record.cost_usd, 6),
            "steps": record.steps,
            "tool_calls": record.tool_calls,
            "tokens": record.input_tokens + record.output_tokens,
        },
        "last_steps": [
            {"seq": s.seq, "kind": s.kind, "name": s.name, "status": s.status}
            for s in list(ctx.recent)[-LAST_STEPS:]
        ],
        "schema": asked.schema,
        "door": door,
    }
    if asked.has_preview:
        shown["preview"] = asked.preview
    return shown


def refusal(decided: ApprovalRecord, need: Need) -> Halt | None:
    """The halt a decision ends the run with, if it does: a timeout the rule cancels on
    (or an escalation that timed out too), a rejection under `on_reject: halt`."""
    detail: Mapping[str, Any] = {
        "rule": need.source,
        "approval": decided.id,
        "tool": decided.tool,
        "decided_by": decided.decided_by,
    }
    if decided.status == "timeout" and need.action.on_timeout != "fallback":
        waited = (decided.decided_at or decided.timeout_at) - decided.requested_at
        escalated = " (after escalation)" if decided.escalations else ""
        return Halt(
            HaltReason.APPROVAL_TIMEOUT,
            f"nobody decided approval {decided.id} of '{decided.tool}' "
            f"within {waited:g}s{escalated}",
            {**detail, "escalations": decided.escalations},
        )
    if decided.status == "rejected" and need.action.on_reject == "halt":
        return Halt(
            HaltReason.APPROVAL_REJECTED,
            f"{decided.decided_by or 'a reviewer'} rejected '{decided.tool}': {decided.note}",
            {**detail, "feedback": decided.note},
        )
    return None
