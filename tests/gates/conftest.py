"""Helpers for testing gates alone: a small policy, a run context, fake transports."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from corral.calls import Call, LLMResult, Result, ToolResult, Usage
from corral.gates.base import RunContext
from corral.gates.budget import build_caps
from corral.policy import Policy, parse_policy
from corral.state import RunRecord, SQLiteStore

POLICY = """
version: 1
providers: {p: {kind: openai, base_url: "http://127.0.0.1:9/v1"}}
models:
  m: {provider: p, model: test-model, context_window: 100000, max_output_tokens: 1000,
      price: {input_per_mtok: 1.0, output_per_mtok: 4.0}}
  big: {provider: p, model: test-big, context_window: 100000, max_output_tokens: 2000,
        price: {input_per_mtok: 3.0, output_per_mtok: 12.0}}
routes: {r: [m], pricey: [m, big]}
tools: {lookup: {scope: read}, send: {scope: irreversible}}
agent_types:
  worker:
    task: {usd: 1.0}
    session: {usd: 0.05, tokens: 100000, tool_calls: 20, steps: 30}
    fleet: {usd: 0.2, per: day}
agents:
  a: {type: worker, route: r, tools: [lookup]}
  b: {type: worker, route: pricey, tools: [lookup, send]}
"""

_ids = itertools.count(1)


def policy(text: str = POLICY) -> Policy:
    return parse_policy(text, env={})


def context(
    snapshot: Policy | None = None,
    *,
    agent: str = "a",
    session: str | None = None,
    topup: dict[str, float] | None = None,
) -> RunContext:
    snapshot = snapshot or policy()
    run_id = f"run_{next(_ids)}"
    kind = snapshot.agents[agent].type
    record = RunRecord(id=run_id, agent=agent, agent_type=kind, created_at=0.0, updated_at=0.0)
    session = session or run_id
    return RunContext(
        record=record,
        session=session,
        policy=snapshot,
        agent_policy=snapshot.agents[agent],
        caps=build_caps(snapshot, kind, run_id, session, topup or {}),
    )


def messages(text: str = "hello") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


class Echo:
    """An in-process transport: answers every call, counting what it saw."""

    def __init__(self, output_tokens: int | None = None) -> None:
        self.calls: list[Call] = []
        self.output_tokens = output_tokens

    async def __call__(self, call: Call, ctx: RunContext) -> Result:
        self.calls.append(call)
        if call.kind == "tool":
            return ToolResult({"tool": call.name, "args": dict(call.args)})
        out = self.output_tokens if self.output_tokens is not None else call.max_tokens or 1
        return LLMResult("ok", Usage(input_tokens=5, output_tokens=out), model="m")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "corral.db")
    yield opened
    await opened.close()
