"""Policy allowlist: an agent calls only its own tools, up to its `max_scope`, and the
models of its route."""

from __future__ import annotations

from corral.calls import Call, Halt, HaltReason, Result
from corral.gates.approval_need import scope_denial
from corral.gates.base import Next, RunContext


class AllowlistGate:
    async def __call__(self, call: Call, ctx: RunContext, next: Next) -> Result:
        agent = ctx.agent_policy
        if call.kind == "tool":
            if call.name not in agent.tools:
                raise Halt(
                    HaltReason.POLICY_DENIED,
                    f"tool '{call.name}' is not allowed for agent '{ctx.record.agent}'",
                    {"rule": f"agents.{ctx.record.agent}.tools", "allowed": list(agent.tools)},
                )
            if agent.max_scope is not None:
                denied = scope_denial(ctx.policy, call.name, agent.max_scope)
                if denied is not None:
                    rule = f"agents.{ctx.record.agent}.max_scope"
                    raise Halt(HaltReason.POLICY_DENIED, denied, {"rule": rule})
        elif (
            call.model != agent.route
            and call.model not in ctx.policy.routes[agent.route]
            # The operator's choice for context summaries serves every agent.
            and call.model != ctx.policy.context.summarizer
        ):
            allowed = [agent.route, *ctx.policy.routes[agent.route]]
            raise Halt(
                HaltReason.POLICY_DENIED,
                f"model '{call.model}' is not on agent '{ctx.record.agent}''s route",
                {"rule": f"agents.{ctx.record.agent}.route", "allowed": allowed},
            )
        return await next(call, ctx)
