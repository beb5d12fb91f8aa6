"""Loop detection and the context window at the gateway, from the conversation it sees."""

from __future__ import annotations

from typing import Any

import orjson

from tests.gateway.conftest import Serve, tool_turn

USER = {"role": "user", "content": "Where is order 42?"}


def lookup(call_id: str, result: str) -> list[dict[str, Any]]:
    """An assistant turn asking for get_customer(42), and the agent's tool result."""
    return tool_turn(call_id, "get_customer", '{"customer_id": 42}', result)


async def test_the_same_tool_call_reported_again_and_again_halts_loop_repeat(
    serve: Serve,
) -> None:
    gw = await serve()
    messages: list[dict[str, Any]] = [USER]
    statuses = []
    async with gw.client(**{"X-Corral-Session": "loop"}) as client:
        for turn in range(4):
            messages += lookup(f"c{turn}", '{"status": "processing"}')
            answer = await client.post(
                "/v1/chat/completions", json={"model": "default", "messages": messages}
            )
            statuses.append(answer.status_code)
            if answer.status_code == 403:
                break
    assert statuses == [200, 200, 403]
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("corral_halt", "loop.repeat")
    [run] = await gw.sup.store.list_runs(session="loop")
    dead = await gw.sup.store.dead_letter_for_run(run.id)
    assert dead is not None
    evidence = dead.packet["rule"]["steps"]
    assert [step["name"] for step in evidence] == ["get_customer"] * 3


async def test_the_gateway_compacts_a_conversation_over_the_window(serve: Serve) -> None:
    gw = await serve({"context_window: 128000": "context_window: 3000"})
    big = "order line " * 1200
    messages = [
        {"role": "system", "content": "You are a support agent."},
        USER,
        *lookup("c1", big),
        {"role": "assistant", "content": "Found it."},
        {"role": "user", "content": "Summarise."},
        {"role": "assistant", "content": "Many lines."},
        {"role": "user", "content": "And the total?"},
    ]
    body = {"model": "default", "messages": messages, "max_tokens": 200}
    async with gw.client() as client:
        answer = await client.post("/v1/chat/completions", content=orjson.dumps(body))
    assert answer.status_code == 200, answer.text
    [step] = await gw.sup.store.list_steps(answer.headers["x-corral-run"])
    sent = step.input["messages"]
    assert sent[0] == messages[0] and sent[-1] == messages[-1]
    [tool] = [m for m in sent if m["role"] == "tool"]  # as the model got it, spotlit
    assert "[artifact art_" in tool["content"]
