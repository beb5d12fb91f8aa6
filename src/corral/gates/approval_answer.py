"""Approvals where the agent runs its tools itself (the gateway): the gate acts on the
model's answer, so a tool call that needs a human never reaches the agent before one
decides.

How an answer with such a call is served:

- its tool calls are checked as SDK tool calls are (allowlist, max_scope, shadow mode,
  approval rules); in a streamed answer, tool-call deltas are held back until then
  (text streams as it comes);
- each call that needs approval gets a pending approval carrying the whole answer; the
  request is held for `gateway.approval_hold` at most (a stream sends keep-alive comments
  meanwhile), then answered 429 `approval_pending`;
- the same request sent again (same agent, same body) finds those approvals by its
  fingerprint and is answered from them: held again while pending, else from the stored
  answer, without calling the model again; for REPLAY_SECONDS after the last decision
  only: later, the same body is a new conversation that opens the same way (a daily
  job's), which asks the model, and a human, anew;
- once decided: an approved call goes out (with the reviewer's arguments if edited); a
  rejected one is replaced by a note carrying the feedback, so the agent replans; a timed
  out one halts the run, or becomes a call of its fallback tool;
- a shadowed write is recorded as a proposal and replaced by a note: the agent is told it
  was proposed, not executed.

Later, the tool results the agent reports must match an approved call (ApprovalGate).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from corral.calls import (
    ApprovalPending,
    Halt,
    HaltReason,
    LLMCall,
    LLMResult,
    StreamDelta,
    StreamSink,
    ToolCallRequest,
    Usage,
)
from corral.gates.approval_need import (
    Need,
    args_digest,
    find_need,
    is_gated,
    is_shadowed,
    need_of,
    scope_denial,
)
from corral.gates.approval_requests import SHADOW_RESULT, Asked, Requests, refusal
from corral.gates.base import Next, RunContext
from corral.state import ApprovalRecord, Store
from corral.telemetry.audit import AuditLog

# What a client held past `approval_hold` is told to wait before sending the request again.
RETRY_AFTER_SECONDS = 5.0
# How often a stream that has begun is told "still here" while its answer is held.
KEEPALIVE_SECONDS = 5.0
# Tool calls delivered unheld that this process remembers (see delivered_unheld).
DELIVERED_KEPT = 65_536
# How long after its approvals were decided a held answer still answers the same request
# sent again: ample for a client told to retry in RETRY_AFTER_SECONDS, however slowly it
# does; past it, one approval must not go on answering every later identical request.
REPLAY_SECONDS = 600.0
_KEEPALIVE = StreamDelta(keepalive=True)


class AnswerCheck:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        requests: Requests,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._audit = audit
        self._requests = requests
        self._clock = clock
        # Tool calls given to agents unheld, by (agent, tool call id): their arguments'
        # digest. Bounded; the oldest go first.
        self._delivered: OrderedDict[tuple[str, str], str] = OrderedDict()

    async def __call__(self, call: LLMCall, ctx: RunContext, next: Next) -> LLMResult:
        gated = ctx.record.agent in ctx.policy.gated_agents
        if gated and call.request_key is not None:
            found = await self._store.find_approvals(request_key=call.request_key)
            held = _newest_answer([r for r in found if r.agent == ctx.record.agent])
            if held and self._still_held(held):
                return await self._from_held(call, ctx, held)
        sink = call.sink
        withheld: list[StreamDelta] = []
        streamed: list[str] = []
        if sink is not None:

            async def hold_tool_calls(delta: StreamDelta) -> None:
                if delta.tool_index is None:
                    streamed.append(delta.text)
                    await sink(delta)
                else:
                    withheld.append(delta)

            call.sink = hold_tool_calls
        try:
            result = await next(call, ctx)
        finally:
            call.sink = sink
        assert isinstance(result, LLMResult)
        if not result.tool_calls:
            return result
        # A stream that has begun is kept alive while the answer is held; one that has
        # not gets a plain answer (429 approval_pending past the hold) instead.
        beat = asyncio.ensure_future(_keep_alive(sink)) if sink and streamed else None
        try:
            answer = await self._check(call, ctx, result, gated)
        except (Halt, ApprovalPending) as refused:
            refused.spent = result  # the answer was paid for: its step shows the cost
            raise
        finally:
            if beat is not None:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
        if sink is not None:
            if answer is result:
                for delta in withheld:
                    await sink(delta)
            else:
                await _deliver(sink, answer, "".join(streamed))
        return answer

    async def _check(
        self, call: LLMCall, ctx: RunContext, result: LLMResult, gated: bool
    ) -> LLMResult:
        policy = ctx.policy
        agent = ctx.agent_policy
        asking: list[tuple[ToolCallRequest, Any, Need]] = []
        notes: dict[str, str] = {}
        for request in result.tool_calls:
            _permit(ctx, request.name)
            if not gated or not is_gated(policy, request.name, agent.shadow):
                continue
            args = _arguments(request.arguments)
            if is_shadowed(policy, request.name, agent.shadow):
                notes[request.id] = await self._propose(ctx, request, args)
                continue
            need = find_need(ctx, request.name, args)
            if need is not None:
                asking.append((request, args, need))
            else:
                self._unheld(ctx.record.agent, request.id, args)
        if not notes and not asking:
            return result
        answer = _rewritten(result, {}, notes)
        if not asking:
            return answer
        stored = _encode(answer)
        pending = []
        for request, args, need in asking:
            asked = Asked(
                request.name,
                args,
                request.id,
                reason=result.text or None,
                schema=_declared_schema(call, request.name),
                request_key=call.request_key,
                answer=stored,
            )
            pending.append((await self._requests.open(ctx, asked, need, "gateway"), need))
        return await self._settle(answer, pending, ctx)

    def _unheld(self, agent: str, call_id: str, args: Any) -> None:
        self._delivered[(agent, call_id)] = args_digest(args)
        if len(self._delivered) > DELIVERED_KEPT:
            self._delivered.popitem(last=False)

    def delivered_unheld(self, agent: str, call_id: str | None, args: Any) -> bool:
        """Whether this process gave the agent this tool call, with these arguments, as
        needing no human: its report passes even if the run has changed since so that a
        rule on `run.*` would ask now. Another process's (or one before a restart) is
        judged again, and asks: fail closed."""
        if call_id is None:
            return False
        return self._delivered.get((agent, call_id)) == args_digest(args)

    def _still_held(self, held: Sequence[ApprovalRecord]) -> bool:
        """Whether a request sent again is the one these approvals held: while one is
        pending, and for REPLAY_SECONDS after the last of them was decided."""
        if any(record.status == "pending" for record in held):
            return True
        decided = max(record.decided_at or record.timeout_at for record in held)
        return self._clock() - decided < REPLAY_SECONDS

    async def _from_held(
        self, call: LLMCall, ctx: RunContext, held: Sequence[ApprovalRecord]
    ) -> LLMResult:
        """A request sent again while (or shortly after) its answer waited for approvals."""
        answer = _decode(held[0].answer or {})
        answer.replayed = True
        pending = [(record, need_of(record)) for record in held]
        settled = await self._settle(answer, pending, ctx)
        if call.sink is not None:
            await _deliver(call.sink, settled, "")
        return settled

    async def _settle(
        self,
        answer: LLMResult,
        pending: Sequence[tuple[ApprovalRecord, Need]],
        ctx: RunContext,
    ) -> LLMResult:
        """Wait for every decision (one hold for all), then answer as they say."""
        hold_until = None if ctx.approval_hold is None else self._clock() + ctx.approval_hold
        decided: dict[str, tuple[ApprovalRecord, Need]] = {}
        for record, need in pending:
            hold = None if hold_until is None else max(0.0, hold_until - self._clock())
            got = await self._requests.wait(record, need, ctx, hold=hold)
            if got is None:
                waiting = [r.id for r, _ in pending if r.id not in decided]
                raise ApprovalPending(waiting, RETRY_AFTER_SECONDS)
            decided[got.id] = (got, need)
        for got, need in decided.values():
            halt = refusal(got, need)
            if halt is not None:
                raise halt
        by_call = {got.call_key or "": got for got, _ in decided.values()}
        for got, need in decided.values():
            if got.status == "timeout":
                await self._audit.append(
                    "approval.fallback",
                    {"id": got.id, "tool": got.tool, "instead": need.action.fallback_tool},
                    ctx.run_id,
                )
        settled = _rewritten(answer, by_call, {})
        # What goes out is checked again against the run's policy: the request's own for a
        # run of one request (a reload since the answer was held applies), the session's
        # snapshot for a session run (a reload applies from its next run).
        for request in settled.tool_calls:
            _permit(ctx, request.name)
        return settled

    async def _propose(self, ctx: RunContext, request: ToolCallRequest, args: Any) -> str:
        proposal = await self._requests.propose(ctx, request.name, args, SHADOW_RESULT)
        return (
            f"[corral] Shadow mode: the call {request.name}({_short(request.arguments)}) was "
            f"{SHADOW_RESULT} (proposal {proposal.id})."
        )


def _permit(ctx: RunContext, tool: str) -> None:
    """Halt (policy.denied) on a call the agent may not make: of a tool outside its tools,
    or above its max_scope."""
    agent = ctx.agent_policy
    name = ctx.record.agent
    if tool not in agent.tools:
        raise Halt(
            HaltReason.POLICY_DENIED,
            f"the model called tool '{tool}', which agent '{name}' may not call",
            {"rule": f"agents.{name}.tools", "allowed": list(agent.tools)},
        )
    denied = scope_denial(ctx.policy, tool, agent.max_scope)
    if denied is not None:
        raise Halt(HaltReason.POLICY_DENIED, denied, {"rule": f"agents.{name}.max_scope"})


def _newest_answer(found: Sequence[ApprovalRecord]) -> list[ApprovalRecord]:
    """The approvals of the newest answer held for a request (`found` is newest first):
    identical requests racing each got an answer, and only its own approvals count."""
    if not found:
        return []
    newest = found[0].answer
    return [record for record in found if record.answer == newest]


def _rewritten(
    answer: LLMResult, decided: dict[str, ApprovalRecord], notes: dict[str, str]
) -> LLMResult:
    """The answer as the agent gets it: shadowed and rejected calls replaced by notes,
    edited arguments and fallback tools put in."""
    kept: list[ToolCallRequest] = []
    added = []
    for request in answer.tool_calls:
        if request.id in notes:
            added.append(notes[request.id])
            continue
        got = decided.get(request.id)
        if got is None:
            kept.append(request)
        elif got.status == "approved":
            arguments = request.arguments
            if got.approved_args is not None:
                arguments = orjson.dumps(got.approved_args).decode()
            kept.append(ToolCallRequest(request.id, request.name, arguments))
        elif got.status == "rejected":
            added.append(
                f"[corral] A reviewer rejected the call {request.name}"
                f"({_short(request.arguments)}): {got.note}. Do not make it again as it is; "
                "change the plan."
            )
        else:  # timed out, with a fallback (other timeouts halted)
            fallback = (got.panel or {}).get("fallback_tool") or request.name
            kept.append(ToolCallRequest(request.id, fallback, request.arguments))
    if not added and kept == list(answer.tool_calls):
        return answer
    text = "\n\n".join([answer.text, *added]) if answer.text else "\n\n".join(added)
    return LLMResult(
        text,
        answer.usage,
        answer.model,
        tuple(kept),
        answer.finish_reason if kept else None,
        None,  # the upstream's own body would carry the calls taken out
        answer.cost_usd,
        answer.replayed,
    )


async def _keep_alive(sink: StreamSink) -> None:
    while True:
        await asyncio.sleep(KEEPALIVE_SECONDS)
        await sink(_KEEPALIVE)


async def _deliver(sink: StreamSink, answer: LLMResult, streamed: str) -> None:
    """Stream what the agent has not had yet: the rest of the text, then the tool calls."""
    rest = answer.text[len(streamed) :] if answer.text.startswith(streamed) else answer.text
    if rest:
        await sink(StreamDelta(text=rest))
    for index, request in enumerate(answer.tool_calls):
        await sink(
            StreamDelta(
                tool_index=index,
                tool_id=request.id,
                tool_name=request.name,
                tool_arguments=request.arguments,
            )
        )


def _encode(answer: LLMResult) -> dict[str, Any]:
    return {
        "text": answer.text,
        "model": answer.model,
        "finish_reason": answer.finish_reason,
        "tool_calls": [[t.id, t.name, t.arguments] for t in answer.tool_calls],
    }


def _decode(stored: dict[str, Any]) -> LLMResult:
    """A stored answer as a result that costs nothing: the call that got it paid."""
    calls = tuple(ToolCallRequest(*fields) for fields in stored.get("tool_calls", ()))
    return LLMResult(
        stored.get("text", ""), Usage(), stored.get("model", ""), calls, stored.get("finish_reason")
    )


def _declared_schema(call: LLMCall, tool: str) -> Any:
    """The argument schema the agent's request declared for `tool` (its `tools`, in the
    canonical OpenAI shape whichever door it came through), or None: what a reviewer's
    edited arguments are checked against, since the gateway knows no Tool of its own."""
    declared = call.params.get("tools")
    if not isinstance(declared, list):
        return None
    for entry in declared:
        function = entry.get("function") if isinstance(entry, dict) else None
        if isinstance(function, dict) and function.get("name") == tool:
            schema = function.get("parameters")
            return schema if isinstance(schema, dict) else None
    return None


def _arguments(text: str) -> Any:
    """A tool call's arguments as rules read them; text that is not a JSON object is kept
    whole (a rule reading a field of it fails, and so asks: fail closed)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"arguments": text}
    return value if isinstance(value, dict) else {"arguments": text}


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
