"""What a tool call needs before it runs: nothing, a human's approval (and under which
rule), or, in shadow mode, to be recorded instead of run.

The policy files each rule under the tools it can match (policy_approvals.py), so most
calls evaluate no rule at all; a call that does builds one CEL context with only the
variables its candidate rules read, and every candidate shares it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cel
import orjson

from corral.gates.base import RunContext
from corral.policy import SCOPE_RANK, ApprovalAction, Policy, ToolPlan
from corral.state import ApprovalRecord, RunRecord


@dataclass(frozen=True, slots=True)
class Need:
    """An approval a call needs: what to do while and after waiting, and why."""

    action: ApprovalAction
    source: str  # where the policy says so: "approvals[2]" or "approvals_default"
    when: str | None  # the rule's expression (None for approvals_default)
    error: str | None = None  # the rule failed to evaluate and counted as a match


def is_gated(policy: Policy, tool: str, agent_shadow: bool) -> bool:
    """Whether a call of `tool` may need an approval or be shadowed: False for most tools,
    and then the gate passes the call on without building anything."""
    if policy.tool_plans[tool].gated:
        return True
    return agent_shadow and policy.tools[tool].scope != "read"


def is_shadowed(policy: Policy, tool: str, agent_shadow: bool) -> bool:
    declared = policy.tools[tool]
    return declared.scope != "read" and (declared.shadow or agent_shadow)


def scope_denial(policy: Policy, tool: str, max_scope: str | None) -> str | None:
    """Why an agent capped at `max_scope` may not call `tool`, or None if it may."""
    scope = policy.tools[tool].scope
    if max_scope is not None and SCOPE_RANK[scope] > SCOPE_RANK[max_scope]:
        return f"tool '{tool}' is {scope}, above the agent's max_scope ({max_scope})"
    return None


def find_need(
    ctx: RunContext, tool: str, args: Mapping[str, Any], preview: Any = None
) -> Need | None:
    """The first rule that matches the call decides; a rule that fails to evaluate (say
    it reads `args.rows` and there is none) counts as a match: fail closed. An
    irreversible call no rule matched needs `approvals_default` unless `unattended`.
    A tool without a preview gives rules a null `preview` (a rule reading a field of it
    fails, and so asks)."""
    policy = ctx.policy
    declared = policy.tools[tool]
    plan = policy.tool_plans[tool]
    if plan.rules:
        context = _context(ctx, tool, declared.scope, args, preview, plan)
        position, error = plan.first_match(context)
        if position >= 0:
            index, rule = plan.rules[position]
            return Need(rule, f"approvals[{index}]", rule.when.source, error)
    if declared.scope == "irreversible" and not declared.unattended:
        return Need(policy.approvals_default, "approvals_default", None)
    return None


def _context(
    ctx: RunContext,
    tool: str,
    scope: str,
    args: Mapping[str, Any],
    preview: Any,
    plan: ToolPlan,
) -> Any:
    """One CEL context for every candidate rule, holding only what they read: each value
    costs about 1.5 µs to convert, most of the cost of a rule set."""
    record = ctx.record
    values: dict[str, Any] = {}
    for name in plan.variables:
        if name == "tool":
            values[name] = tool
        elif name == "scope":
            values[name] = scope
        elif name == "args":
            values[name] = dict(args)
        elif name == "agent":
            values[name] = record.agent
        elif name == "agent_type":
            values[name] = record.agent_type
        elif name == "session":
            values[name] = record.session
        elif name == "task":
            values[name] = record.task
        elif name == "preview":
            values[name] = preview
        elif name == "run":
            values[name] = {field: _run_field(record, field) for field in plan.run_fields}
    context = cel.Context()
    context.update(values)
    return context


def need_of(record: ApprovalRecord) -> Need:
    """The rule an approval was asked under, as it was then (the policy may have been
    reloaded since): what a request sent again is answered by."""
    shown = record.panel or {}
    fields = {name: shown[name] for name in ApprovalAction.model_fields if name in shown}
    rule = shown.get("rule") or {}
    return Need(ApprovalAction.model_construct(**fields), record.rule, rule.get("when"))


def _run_field(record: RunRecord, field: str) -> Any:
    if field == "tokens":
        return record.input_tokens + record.output_tokens
    return getattr(record, field)  # cost_usd, steps, tool_calls, waiting_s


def args_digest(args: Any) -> str:
    """What an approval is bound to: the arguments that will run, canonically encoded."""
    return hashlib.sha256(orjson.dumps(args, option=orjson.OPT_SORT_KEYS)).hexdigest()
