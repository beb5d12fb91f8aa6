"""Real client libraries through the gateway to the simulated provider."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from corral.calls import RunStatus
from corral.providers.sim import Script, SimReply, SimToolCall
from tests.gateway.conftest import Serve

USER = [{"role": "user", "content": "Where is order 42?"}]
LOOKUP = Script.of(
    SimReply(tool_calls=(SimToolCall("get_customer", {"customer_id": 42}),)),
    "Order 42 ships tomorrow.",
)


def oai(url: str, key: str, **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, default_headers=headers)


def claude(url: str, key: str, **headers: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key=key, default_headers=headers)


async def test_openai_client_whole_answer_with_corral_headers(serve: Serve) -> None:
    gw = await serve()
    async with oai(gw.url, gw.agent_key) as client:
        raw = await client.chat.completions.with_raw_response.create(model="default", messages=USER)
    answer = raw.parse()
    assert answer.choices[0].message.content == "Simulated reply from gpt-4o to: Where is order 42?"
    assert answer.model == "smart"  # the policy model that answered
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    run_id = raw.headers["x-corral-run"]
    run = await gw.sup.store.get_run(run_id)
    assert run is not None and run.status is RunStatus.COMPLETED  # no session: a run per request
    assert run.steps == 1 and run.cost_usd > 0
    # The task cap is 0.20 USD and this call spent a little of it.
    assert 0.19 < float(raw.headers["x-corral-budget-remaining-usd"]) < 0.20
    assert float(raw.headers["x-corral-overhead-ms"]) >= 0


async def test_openai_client_tool_loop_in_a_session_counts_the_tool_call(serve: Serve) -> None:
    gw = await serve()
    gw.sim.set_script("gpt-4o", LOOKUP)
    messages: list[dict[str, object]] = list(USER)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_customer",
                "parameters": {
                    "type": "object",
                    "properties": {"customer_id": {"type": "integer"}},
                },
            },
        }
    ]
    async with oai(gw.url, gw.agent_key, **{"X-Corral-Session": "ticket-42"}) as client:
        first = await client.chat.completions.create(
            model="default",
            messages=messages,
            tools=tools,  # type: ignore[arg-type]
        )
        call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert first.choices[0].finish_reason == "tool_calls"
        assert call.function.name == "get_customer"  # type: ignore[union-attr]
        assert json.loads(call.function.arguments) == {"customer_id": 42}  # type: ignore[union-attr]
        messages.append(first.choices[0].message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"name": "Ada"}'})
        raw = await client.chat.completions.with_raw_response.create(
            model="default",
            messages=messages,
            tools=tools,  # type: ignore[arg-type]
        )
    assert raw.parse().choices[0].message.content == "Order 42 ships tomorrow."
    run = await gw.sup.store.get_run(raw.headers["x-corral-run"])
    assert run is not None and run.status is RunStatus.RUNNING  # the session goes on
    assert (run.steps, run.tool_calls) == (3, 1)
    steps = await gw.sup.store.list_steps(run.id)
    tool = steps[1]
    assert (tool.kind, tool.name, tool.input, tool.output) == (
        "tool",
        "get_customer",
        {"customer_id": 42},
        '{"name": "Ada"}',
    )


async def test_openai_client_streams_text_and_tool_calls(serve: Serve) -> None:
    gw = await serve()
    gw.sim.set_script("gpt-4o", LOOKUP)
    async with oai(gw.url, gw.agent_key) as client:
        stream = await client.chat.completions.create(
            model="default", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        names, arguments, finish, usage = "", "", None, None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                for piece in choice.delta.tool_calls or ():
                    names += piece.function.name or ""  # type: ignore[union-attr]
                    arguments += piece.function.arguments or ""  # type: ignore[union-attr]
                finish = choice.finish_reason or finish
    assert (names, json.loads(arguments), finish) == (
        "get_customer",
        {"customer_id": 42},
        "tool_calls",
    )
    assert usage is not None and usage.prompt_tokens > 0


async def test_anthropic_client_whole_and_streamed(serve: Serve) -> None:
    gw = await serve()
    async with claude(gw.url, gw.agent_key) as client:
        message = await client.messages.create(
            model="fast",
            max_tokens=100,
            system="Be brief.",
            messages=USER,  # type: ignore[arg-type]
        )
        assert message.content[0].text.startswith("Simulated reply from gpt-4o-mini")  # type: ignore[union-attr]
        assert message.usage.output_tokens > 0
        async with client.messages.stream(
            model="fast",
            max_tokens=100,
            messages=USER,  # type: ignore[arg-type]
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
    assert text.startswith("Simulated reply from gpt-4o-mini")
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


async def test_anthropic_client_tool_use_round_trip(serve: Serve) -> None:
    gw = await serve()
    gw.sim.set_script("gpt-4o", LOOKUP)
    tools = [{"name": "get_customer", "input_schema": {"type": "object"}}]
    async with claude(gw.url, gw.agent_key, **{"X-Corral-Session": "t-7"}) as client:
        first = await client.messages.create(
            model="default",
            max_tokens=200,
            messages=USER,
            tools=tools,  # type: ignore[arg-type]
        )
        use = first.content[-1]
        assert use.type == "tool_use" and use.name == "get_customer"
        assert use.input == {"customer_id": 42}
        turns = [
            *USER,
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Ada"}],
            },
        ]
        async with client.messages.stream(
            model="default",
            max_tokens=200,
            messages=turns,
            tools=tools,  # type: ignore[arg-type]
        ) as stream:
            final = await stream.get_final_message()
    assert final.content[0].text == "Order 42 ships tomorrow."  # type: ignore[union-attr]
    runs = await gw.sup.store.list_runs(session="t-7")
    assert [(r.steps, r.tool_calls) for r in runs] == [(3, 1)]


async def test_halt_is_a_403_the_client_does_not_retry(serve: Serve) -> None:
    # A task cap smaller than any call: the budget halts before the upstream is asked.
    gw = await serve({"task:    {usd: 0.20}": "task:    {usd: 0.000001}"})
    async with oai(gw.url, gw.agent_key) as client:  # the SDK's default: 2 retries
        with pytest.raises(openai.PermissionDeniedError) as raised:
            await client.chat.completions.create(model="default", messages=USER)
    error = raised.value.body
    assert isinstance(error, dict)
    assert error["type"] == "corral_halt" and error["code"] == "budget.cost"
    assert error["run_id"].startswith("run_")
    assert sum(gw.sim.requests.values()) == 0
    # The client sent it once: the gateway answered one 403 and nothing else.
    answered = gw.app.metrics.registry.get_sample_value(
        "corral_gateway_requests_total", {"route": "/v1/chat/completions", "status": "403"}
    )
    assert answered == 1
    run = await gw.sup.store.get_run(error["run_id"])
    assert run is not None and run.status is RunStatus.HALTED
    async with claude(gw.url, gw.agent_key) as client:
        with pytest.raises(anthropic.PermissionDeniedError) as refused:
            await client.messages.create(model="fast", max_tokens=10, messages=USER)  # type: ignore[arg-type]
    body = refused.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error" and body["error"]["code"] == "budget.cost"


async def test_session_and_task_headers_name_the_run(serve: Serve) -> None:
    gw = await serve()
    headers = {"X-Corral-Session": "s-9", "X-Corral-Task": "ticket-9"}
    async with oai(gw.url, gw.agent_key, **headers) as client:
        first = await client.chat.completions.with_raw_response.create(model="fast", messages=USER)
        second = await client.chat.completions.with_raw_response.create(model="fast", messages=USER)
    assert first.headers["x-corral-run"] == second.headers["x-corral-run"]
    run = await gw.sup.store.get_run(first.headers["x-corral-run"])
    assert run is not None and (run.session, run.task, run.steps) == ("s-9", "ticket-9", 2)


async def test_a_halted_session_answers_403_until_retried(serve: Serve) -> None:
    gw = await serve({"steps: 40": "steps: 1"})
    headers = {"X-Corral-Session": "s-1"}
    async with oai(gw.url, gw.agent_key, **headers) as client:
        await client.chat.completions.create(model="default", messages=USER)
        for _ in range(2):
            with pytest.raises(openai.PermissionDeniedError) as raised:
                await client.chat.completions.create(model="default", messages=USER)
            assert raised.value.body["code"] == "budget.steps"  # type: ignore[index]
    assert sum(gw.sim.requests.values()) == 1


async def test_langchain_chat_openai_through_the_gateway(serve: Serve) -> None:
    from langchain_openai import ChatOpenAI

    gw = await serve()
    model = ChatOpenAI(model="fast", base_url=f"{gw.url}/v1", api_key=gw.agent_key)  # type: ignore[arg-type]
    reply = await model.ainvoke("Hello there")
    assert reply.content == "Simulated reply from gpt-4o-mini to: Hello there"


# The prebuilt ReAct agent the issue names; its successor lives in the `langchain` package.
@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
async def test_langgraph_react_agent_through_the_gateway(serve: Serve) -> None:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.prebuilt import create_react_agent

    gw = await serve()
    gw.sim.set_script("gpt-4o", LOOKUP)
    looked_up: list[int] = []

    @tool
    def get_customer(customer_id: int) -> str:
        """Look up a customer."""
        looked_up.append(customer_id)
        return "Ada"

    model = ChatOpenAI(
        model="default",
        base_url=f"{gw.url}/v1",
        api_key=gw.agent_key,  # type: ignore[arg-type]
        default_headers={"X-Corral-Session": "graph-1"},
    )
    agent = create_react_agent(model, [get_customer])
    state = await agent.ainvoke({"messages": [("user", "Where is order 42?")]})
    assert state["messages"][-1].content == "Order 42 ships tomorrow."
    assert looked_up == [42]
    [run] = await gw.sup.store.list_runs(session="graph-1")
    assert (run.steps, run.tool_calls) == (3, 1)
