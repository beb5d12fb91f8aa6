"""Scripted agents that re-enact the incidents, supervised end to end against the sim."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from corral import Halted, HaltReason, Run, Supervisor, ToolArgumentError
from corral.providers.sim import Script, SimProvider, SimReply, SimToolCall
from tests.runtime.conftest import example_policy

TOOLS = {
    "tools: [get_customer, draft_email, send_email, sql_write]": (
        "tools: [get_customer, draft_email, send_email, sql_write, search, check_job]"
    ),
    "  get_customer: {scope: read}": (
        "  get_customer: {scope: read}\n  search: {scope: read}\n  check_job: {scope: read}"
    ),
}


@pytest.fixture
async def sup(
    tmp_path: Path, sim: SimProvider, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Supervisor]:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    supervisor = Supervisor.from_policy(example_policy(tmp_path, sim, TOOLS))
    ran: dict[str, int] = {"get_customer": 0}
    supervisor.ran = ran  # type: ignore[attr-defined]

    @supervisor.tool()
    async def get_customer(customer_id: int) -> dict[str, Any]:
        ran["get_customer"] += 1
        return {"id": customer_id}

    @supervisor.tool()
    async def search(query: str) -> list[str]:
        return [f"{query}: result {n}" for n in range(3)]  # never quite the same page

    @supervisor.tool()
    async def check_job(job: str) -> dict[str, str]:
        return {"status": "running"}  # the state the agent keeps reading never changes

    yield supervisor
    await supervisor.close()


def calls(*replies: tuple[str, Mapping[str, Any]]) -> Script:
    """A model that asks for one tool call per turn, these in order, the last forever."""
    return Script.of(*(SimReply(tool_calls=(SimToolCall(n, dict(a)),)) for n, a in replies))


async def tool_loop(run: Run, task: str, turns: int = 1000) -> str:
    """An ordinary agent: ask the model, run the tools it asks for, feed results back."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": task}]
    for _ in range(turns):
        reply = await run.chat("default", messages, max_tokens=100)
        if not reply.tool_calls:
            return reply.text
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": t.id,
                        "type": "function",
                        "function": {"name": t.name, "arguments": t.arguments},
                    }
                    for t in reply.tool_calls
                ],
            }
        )
        for t in reply.tool_calls:
            try:
                result: Any = await run.tool(t.name, json.loads(t.arguments))
            except ToolArgumentError as exc:  # tell the model, as frameworks do, and go on
                result = f"error: {exc}"
            messages.append(
                {"role": "tool", "tool_call_id": t.id, "content": orjson.dumps(result).decode()}
            )
    raise AssertionError("the agent never stopped")


async def halted(run_agent: Any) -> Halted:
    with pytest.raises(Halted) as caught:
        await run_agent
    return caught.value


async def test_a_search_rephrased_over_and_over_halts_loop_similar(
    sup: Supervisor, sim: SimProvider
) -> None:
    sim.set_script(
        "gpt-4o",
        calls(
            ("search", {"query": "cheapest flights to paris"}),
            ("search", {"query": "paris flights cheapest"}),
            ("search", {"query": "cheapest paris flights"}),
            ("search", {"query": "flights to paris, cheapest"}),
            ("search", {"query": "find the cheapest flights to paris"}),
        ),
    )
    async with sup.run(agent="support") as run:
        halt = await halted(tool_loop(run, "Find me a cheap flight to Paris"))
    assert halt.reason is HaltReason.LOOP_SIMILAR
    queries = [step["args"]["query"] for step in halt.packet["rule"]["steps"]]
    assert len(queries) == 4 and queries[0] == "cheapest flights to paris"
    searches = [s for s in await sup.store.list_steps(run.id) if s.name == "search"]
    assert [s.status for s in searches] == ["ok", "ok", "ok", "halted"]


async def test_a_malformed_call_retried_847_times_stops_at_the_third(
    sup: Supervisor, sim: SimProvider
) -> None:
    sim.set_script("gpt-4o", calls(("get_customer", {"customer_id": "forty-two"})))
    async with sup.run(agent="support") as run:
        halt = await halted(tool_loop(run, "Look up customer forty-two", turns=847))
    assert halt.reason is HaltReason.LOOP_ERROR_REPEAT
    tools = [s for s in await sup.store.list_steps(run.id) if s.kind == "tool"]
    assert [s.status for s in tools] == ["error", "error", "halted"]  # the third is the halt
    assert sup.ran["get_customer"] == 0  # type: ignore[attr-defined]
    assert all(step["error"] == "ToolArgumentError" for step in halt.packet["rule"]["steps"])


async def test_a_run_that_keeps_reading_unchanged_state_halts_no_progress(
    sup: Supervisor, sim: SimProvider
) -> None:
    jobs = [("check_job", {"job": name}) for name in ("export", "import", "billing", "mail")]
    sim.set_script("gpt-4o", calls(*(jobs * 5)))
    async with sup.run(agent="support") as run:
        halt = await halted(tool_loop(run, "Wait for the jobs to finish"))
    assert halt.reason is HaltReason.LOOP_NO_PROGRESS
    assert len(halt.packet["rule"]["steps"]) == 5


async def test_an_analyzer_and_a_verifier_bouncing_a_draft_halt_ping_pong(
    sup: Supervisor,
) -> None:
    draft = "Revenue grew 5% in Q3, driven by the new annual plan and lower churn."

    def says(text: str) -> dict[str, Any]:
        return {"extra_headers": {"X-Sim-Script": orjson.dumps({"text": text}).decode()}}

    # The two agents are one team in the example policy: they share the session.
    analyzer = await sup.run(agent="analyzer", session="review-7")
    verifier = await sup.run(agent="verifier", session="review-7")
    message = "Write the Q3 summary."
    with pytest.raises(Halted) as caught:
        for _ in range(10):
            reply = await analyzer.chat(
                "default", [{"role": "user", "content": message}], **says(draft)
            )
            reply = await verifier.chat(
                "default",
                [{"role": "user", "content": f"Verify: {reply.text}"}],
                **says(f"{draft} Please check again."),
            )
            message = reply.text
    assert caught.value.reason is HaltReason.LOOP_PING_PONG
    bounced = caught.value.packet["rule"]["steps"]
    assert {step["agent"] for step in bounced} == {"analyzer", "verifier"}
    assert len(bounced) == 5
