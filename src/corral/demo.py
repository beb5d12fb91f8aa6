"""`corral demo`: the simulated provider in-process, a few calls through the real OpenAI client.

Each call is recorded as a step of one run in the policy's store, with an audit
entry, so `corral runs ls` and `corral audit verify` have something to show.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from rich.console import Console
from rich.table import Table

from corral.calls import RunStatus, Usage
from corral.policy import load_policy
from corral.providers.sim import Script, SimProvider, SimReply, SimToolCall
from corral.state import RunRecord, StepRecord, open_store
from corral.telemetry.audit import AuditLog

# The sim accepts any key; the example policy names SIM_API_KEY, so give it one.
SIM_KEY_DEFAULT = "sim-demo-key"


@dataclass(frozen=True, slots=True)
class DemoCall:
    model: str  # a policy model name
    prompt: str
    stream: bool = False


CALLS = (
    DemoCall("fast", "Where is my order #1042?"),
    DemoCall("smart", "Summarise the customer's last three tickets.", stream=True),
    DemoCall("smart", "Look up customer 42 before answering."),
)

# gpt-4o answers the look-up request with a tool call, as an agent's model would.
LOOKUP = Script(
    (
        SimReply(
            "Let me look that customer up.",
            tool_calls=(SimToolCall("get_customer", {"customer_id": 42}),),
        ),
    )
)


async def run_demo(policy_path: Path, console: Console) -> None:
    os.environ.setdefault("SIM_API_KEY", SIM_KEY_DEFAULT)
    policy = load_policy(policy_path)
    store = open_store(policy.store)
    audit = AuditLog(store)
    now = time.time()
    agent = policy.agents.get("support")
    run = RunRecord(
        id=f"run_{uuid.uuid4().hex[:12]}",
        agent="support",
        agent_type=agent.type if agent else "demo",
        task="demo",
        created_at=now,
        updated_at=now,
    )
    await store.create_run(run)
    await audit.append("run.start", {"agent": run.agent, "task": run.task}, run.id)

    table = Table(title="corral demo: calls through the OpenAI client to the simulated provider")
    for column in ("#", "model", "upstream", "stream", "reply", "tokens in/out", "usd", "ms"):
        table.add_column(column)
    total = Usage()
    cost = 0.0
    async with SimProvider(scripts={"lookup": LOOKUP}) as sim:
        client = AsyncOpenAI(base_url=sim.openai_base_url, api_key=os.environ["SIM_API_KEY"])
        for seq, call in enumerate(CALLS, start=1):
            upstream = policy.models[call.model].model
            started = time.perf_counter()
            text, usage, tools = await _complete(client, upstream, call, seq == len(CALLS))
            elapsed_ms = (time.perf_counter() - started) * 1000
            price = policy.prices[call.model]
            step_cost = price.cost(usage) if price else 0.0
            total, cost = total + usage, cost + step_cost
            reply = text if not tools else f"{text} -> tool call {', '.join(tools)}"
            await store.add_steps(
                [
                    StepRecord(
                        run_id=run.id,
                        seq=seq,
                        kind="llm",
                        name=call.model,
                        input={"prompt": call.prompt, "stream": call.stream},
                        output={"text": text, "tool_calls": tools},
                        input_tokens=usage.input_tokens,
                        output_tokens=usage.output_tokens,
                        cost_usd=step_cost,
                        started_at=time.time() - elapsed_ms / 1000,
                        ended_at=time.time(),
                        model_used=upstream,
                    )
                ]
            )
            await audit.append("step", {"seq": seq, "model": call.model, "usd": step_cost}, run.id)
            table.add_row(
                str(seq),
                call.model,
                upstream,
                "yes" if call.stream else "no",
                reply[:60],
                f"{usage.input_tokens}/{usage.output_tokens}",
                f"{step_cost:.6f}",
                f"{elapsed_ms:.1f}",
            )
        await client.close()
    ended = time.time()
    await store.save_run(
        replace(
            run,
            status=RunStatus.COMPLETED,
            updated_at=ended,
            ended_at=ended,
            input_tokens=total.input_tokens,
            output_tokens=total.output_tokens,
            cost_usd=cost,
            steps=len(CALLS),
            outcome={"calls": len(CALLS)},
        )
    )
    await audit.append("run.end", {"status": "completed", "usd": cost}, run.id)
    verification = await audit.verify()
    await store.close()

    console.print(table)
    console.print(
        f"Run [bold]{run.id}[/bold] completed: {total.total_tokens} tokens, {cost:.6f} USD; "
        f"audit chain intact with {verification.count} entries."
    )
    console.print(
        f"Inspect it: corral runs ls --policy {policy_path} · "
        f"corral runs show {run.id} --policy {policy_path} · "
        f"corral audit verify --policy {policy_path}"
    )


async def _complete(
    client: AsyncOpenAI, upstream: str, call: DemoCall, wants_tool: bool
) -> tuple[str, Usage, list[str]]:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": call.prompt}]
    headers = {"X-Sim-Script": "lookup"} if wants_tool else {}
    if call.stream:
        parts: list[str] = []
        usage = Usage()
        stream = await client.chat.completions.create(
            model=upstream,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=headers,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            if chunk.usage:
                usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        return "".join(parts), usage, []
    reply = await client.chat.completions.create(
        model=upstream,
        messages=messages,
        extra_headers=headers,
    )
    message = reply.choices[0].message
    tools = [t.function.name for t in message.tool_calls or [] if t.type == "function"]
    usage = (
        Usage(reply.usage.prompt_tokens, reply.usage.completion_tokens) if reply.usage else Usage()
    )
    return message.content or "", usage, tools
