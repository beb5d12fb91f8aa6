"""10,000 calls through the gateway and the SDK with 30 % injected upstream faults.

One gateway on loopback in front of the simulated provider, which draws a fault for 30 %
of its requests from a seeded mix: 429 with Retry-After, 500 and 503, connection resets,
hangs past the upstream timeout, streams (and whole bodies) cut short, a slow first byte
and slow streams. 64 callers at once: raw HTTP to both doors, streamed and not, the
official openai and anthropic clients, and SDK runs on the gateway's own Supervisor
(chat, stream, tool). Four agents; one-request runs, sessions of one agent and sessions a
team of two shares; some sessions ask for long answers until a cap stops them. Every
delay of the policy is in milliseconds (see harness.write_policy).

Then, from the store, the counters and the sim's own ledger of what it answered:
(a) every answer the upstream wrote whole has exactly one `ok` step, whose tokens are the
upstream's usage and whose cost is that usage at the policy's price, and what the client
was told is that usage; no other step charges anything but a stream cut after its first
delta, at its price; every run's totals are the sums of its steps, and the global budget
counter holds exactly what the steps cost (nothing unrecorded, nothing charged twice);
(b) nothing held in the counters, no write-ahead record left; (c) no run left running once
the sessions end; (d) no run past its task cap, no session past its session caps; (e) the
audit chain verifies.

Two focused tests at the end pin down what the large one cannot see: usage the upstream
reported before a stream was cut and retried, and an answer a loop halt follows.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest

from corral import Halted, HaltReason, ProviderError, RateLimited, Supervisor, UpstreamUnavailable
from corral.aio import loop_factory
from corral.gates.budget import WINDOW_SECONDS
from corral.gateway.app import Gateway
from corral.policy import Policy
from corral.providers.sim import Fault, FaultKind
from corral.state.memory import MemoryCounters
from tests.reliability.harness import (
    TEAM,
    FaultySim,
    Ledger,
    agent_key,
    check_audit,
    check_caps,
    check_no_hold_in_flight,
    check_totals,
    expected_cost,
    micro,
    price_of,
    running,
    serving,
    tag_of,
    tagged,
    write_policy,
)

CALLS = 10_000
CONCURRENCY = 64
SEED = 10
# 30 % of upstream requests; every delay in milliseconds (the upstream timeout is 2 s).
MIX = [
    (0.07, Fault(FaultKind.RATE_LIMIT, retry_after=0.005)),
    (0.05, Fault(FaultKind.ERROR, status=503)),
    (0.03, Fault(FaultKind.ERROR, status=500)),
    (0.04, Fault(FaultKind.RESET)),
    (0.02, Fault(FaultKind.HANG, delay=5.0)),  # past the timeout: the client gives up
    # Cut after the first frame (nothing delivered yet, so retried) or after the first
    # text delta (delivered: no retry, charged for what arrived).
    (0.02, Fault(FaultKind.CUT_STREAM, after_chunks=1)),
    (0.03, Fault(FaultKind.CUT_STREAM, after_chunks=2)),
    (0.02, Fault(FaultKind.SLOW_FIRST_BYTE, delay=0.05)),
    (0.02, Fault(FaultKind.SLOW_STREAM, delay=0.005)),
]
ROUTES = {"support": "default", "summarizer": "default", "planner": "mixed", "critic": "default"}
TOOLED = ("support", "planner", "critic")
OPENAI_DOOR, ANTHROPIC_DOOR = "/v1/chat/completions", "/v1/messages"
# What a gateway request may answer under upstream faults; never a 500.
ANSWERS = {200, 403, 502, 503, 504}
TOPICS = ("order", "invoice", "parcel", "refund", "ticket", "account", "shipment", "claim")


@dataclass
class Tally:
    calls: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    # What the client was told each answered call used: tag -> (input, output).
    reported: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass
class World:
    url: str
    sup: Supervisor
    keys: dict[str, str]
    # Raw HTTP calls share one aiohttp pool: its per-request cost is a tenth of httpx's,
    # and the whole suite shares two cores with the gateway and the sim.
    http: aiohttp.ClientSession
    tally: Tally = field(default_factory=Tally)
    serial: int = 0

    def tag(self) -> str:
        self.serial += 1
        return f"c{self.serial}"


class Clients:
    """One caller's official clients, on an HTTP client of its own: one httpx pool shared
    by 64 callers spends more time looking for a free connection than the gateway spends
    on the call (httpcore scans the whole pool on every request)."""

    def __init__(self, world: World) -> None:
        # Idle connections are dropped before uvicorn closes them (after 5 s), so no
        # request is ever sent on a connection the server is closing.
        self.http = httpx.AsyncClient(
            timeout=60, limits=httpx.Limits(max_connections=2, keepalive_expiry=1.0)
        )
        # The anthropic client brings its own fork of httpx.
        self.http2 = httpx2.AsyncClient(
            timeout=60, limits=httpx2.Limits(max_connections=2, keepalive_expiry=1.0)
        )
        url = world.url
        self.oai = {
            agent: openai.AsyncOpenAI(
                base_url=f"{url}/v1", api_key=key, max_retries=0, http_client=self.http
            )
            for agent, key in world.keys.items()
        }
        self.claude = {
            agent: anthropic.AsyncAnthropic(
                base_url=url, api_key=key, max_retries=0, http_client=self.http2
            )
            for agent, key in world.keys.items()
        }

    async def close(self) -> None:
        await self.http.aclose()
        await self.http2.aclose()


def question(rng: random.Random, tag: str, big: bool) -> str:
    # Numbers and ids differ from call to call, as they do in real requests.
    topic, n, customer = rng.choice(TOPICS), rng.randrange(10**6), rng.randrange(10**4)
    return tagged(tag, f"What is the status of {topic} {n} for customer {customer}?", big=big)


def tool_turn(call_id: str, customer: int) -> list[dict[str, Any]]:
    """An assistant turn that asked for get_customer and the result the agent sends back:
    the gateway records it as a reported tool call."""
    arguments = orjson.dumps({"customer_id": customer}).decode()
    function = {"name": "get_customer", "arguments": arguments}
    call = {"id": call_id, "type": "function", "function": function}
    result = {"role": "tool", "tool_call_id": call_id, "content": f'{{"id": {customer}}}'}
    return [{"role": "assistant", "content": None, "tool_calls": [call]}, result]


# --- one call through each way in -------------------------------------------------------------


async def gateway_call(
    world: World, rng: random.Random, agent: str, session: str | None, big: bool
) -> None:
    tag = world.tag()
    door = rng.choice((OPENAI_DOOR, ANTHROPIC_DOOR))
    stream = rng.random() < 0.5
    messages: list[dict[str, Any]] = []
    if door == OPENAI_DOOR and agent in TOOLED and session is not None and rng.random() < 0.3:
        messages = [{"role": "user", "content": "Look the customer up."}]
        messages += tool_turn(f"call_{tag}", rng.randrange(10**5))
    messages.append({"role": "user", "content": question(rng, tag, big)})
    body: dict[str, Any] = {"model": ROUTES[agent], "messages": messages, "stream": stream}
    if door == ANTHROPIC_DOOR or not big or rng.random() < 0.5:
        body["max_tokens"] = 4000 if big else rng.choice((16, 64, 256))
    headers = {"Authorization": f"Bearer {world.keys[agent]}"}
    if session is not None:
        headers["X-Corral-Session"] = session
    world.tally.calls += 1
    async with world.http.post(door, json=body, headers=headers) as response:
        status, raw = response.status, await response.read()
    assert status in ANSWERS, raw
    if stream:
        broken = status == 200 and b'"error"' in raw  # an error event ended the stream
        world.tally.outcomes[f"stream {status}{' cut' if broken else ''}"] += 1
        return
    world.tally.outcomes[f"http {status}"] += 1
    if status == 200:
        usage = orjson.loads(raw)["usage"]
        if door == OPENAI_DOOR:
            world.tally.reported[tag] = (usage["prompt_tokens"], usage["completion_tokens"])
        else:
            world.tally.reported[tag] = (usage["input_tokens"], usage["output_tokens"])


async def client_call(
    world: World, clients: Clients, rng: random.Random, agent: str, session: str | None
) -> None:
    """The official clients, their retries off (a retry would be another call)."""
    tag = world.tag()
    ask = dict(
        model=ROUTES[agent],
        messages=[{"role": "user", "content": question(rng, tag, False)}],
        max_tokens=64,
        extra_headers={"X-Corral-Session": session} if session is not None else {},
    )
    stream = rng.random() < 0.5
    world.tally.calls += 1
    try:
        if rng.random() < 0.5:
            if stream:
                async for _ in await clients.oai[agent].chat.completions.create(**ask, stream=True):
                    pass
            else:
                answer = await clients.oai[agent].chat.completions.create(**ask)
                assert answer.usage is not None
                usage = answer.usage.prompt_tokens, answer.usage.completion_tokens
                world.tally.reported[tag] = usage
        elif stream:
            async with clients.claude[agent].messages.stream(**ask) as events:
                async for _ in events:
                    pass
        else:
            message = await clients.claude[agent].messages.create(**ask)
            world.tally.reported[tag] = (message.usage.input_tokens, message.usage.output_tokens)
        world.tally.outcomes["client ok"] += 1
    except (openai.APIStatusError, anthropic.APIStatusError) as exc:
        assert exc.status_code in ANSWERS, exc
        world.tally.outcomes[f"client {exc.status_code}"] += 1
    except (openai.APIError, anthropic.APIError) as exc:  # an error event mid-stream
        assert "upstream" in str(exc) or "halt" in str(exc), exc
        world.tally.outcomes["client stream error"] += 1


async def sdk_run(
    world: World, rng: random.Random, agent: str, session: str | None, big: bool
) -> None:
    """An agent on the SDK: five chat, stream and tool calls, going on after a failed call
    as an agent would, until a halt ends its run."""
    kinds = ("chat", "stream", "tool") if agent in TOOLED else ("chat", "stream")
    try:
        async with world.sup.run(
            agent=agent, session=session, halt_on_upstream_failure=False
        ) as run:
            for n in range(5):
                world.tally.calls += 1
                kind = rng.choice(kinds)
                try:
                    if kind == "tool":
                        await run.tool("get_customer", {"customer_id": rng.randrange(10**6)})
                        world.tally.outcomes["sdk tool ok"] += 1
                        continue
                    tag = world.tag()
                    messages = [{"role": "user", "content": question(rng, tag, big)}]
                    limit = None if big and n % 2 else rng.choice((16, 64, 4000 if big else 256))
                    if kind == "chat":
                        answer = await run.chat(ROUTES[agent], messages, max_tokens=limit)
                        usage = answer.usage
                        world.tally.reported[tag] = (usage.input_tokens, usage.output_tokens)
                    else:
                        async for _ in run.stream(ROUTES[agent], messages, max_tokens=limit):
                            pass
                    world.tally.outcomes[f"sdk {kind} ok"] += 1
                except (UpstreamUnavailable, ProviderError, RateLimited) as exc:
                    world.tally.outcomes[f"sdk {kind} {type(exc).__name__}"] += 1
    except Halted as halted:
        world.tally.outcomes[f"sdk halted {halted.reason.value}"] += 1


# --- the workload ----------------------------------------------------------------------------

Job = Callable[[World, Clients], Awaitable[None]]


def workload(rng: random.Random) -> list[Job]:
    """About CALLS calls, shuffled: 35 % one-request runs, 30 % gateway sessions, 10 % the
    official clients, 25 % SDK runs of five calls. A session id of the team's is sent by
    both of its agents; ids ending in -g ask for long answers, until a cap stops them."""

    def ids(prefix: str, count: int, greedy_every: int) -> list[str]:
        return [f"{prefix}-{n}{'-g' if n % greedy_every == 0 else ''}" for n in range(count)]

    sessions = {"support": ids("sup", 80, 10), "summarizer": ids("sum", 40, 10)}
    sessions["planner"] = sessions["critic"] = ids(TEAM, 40, 10)
    sdk_sessions = ids("sdk", 30, 5)
    agents = list(ROUTES)
    jobs: list[Job] = []

    def add(job: Callable[[World, Clients, random.Random], Awaitable[None]]) -> None:
        own = random.Random(rng.randrange(2**32))  # each job its own draws, in any order
        jobs.append(lambda world, clients: job(world, clients, own))

    for _ in range(int(CALLS * 0.35)):
        agent, big = rng.choice(agents), rng.random() < 0.05
        add(lambda w, c, r, a=agent, b=big: gateway_call(w, r, a, None, b))
    for _ in range(int(CALLS * 0.30)):
        agent = rng.choice(agents)
        session = rng.choice(sessions[agent])
        big = session.endswith("-g") or rng.random() < 0.03
        add(lambda w, c, r, a=agent, s=session, b=big: gateway_call(w, r, a, s, b))
    for _ in range(int(CALLS * 0.10)):
        agent = rng.choice(agents)
        session = rng.choice(sessions[agent]) if rng.random() < 0.5 else None
        add(lambda w, c, r, a=agent, s=session: client_call(w, c, r, a, s))
    for _ in range(int(CALLS * 0.25) // 5):
        agent = rng.choice(agents)
        session = rng.choice(sdk_sessions) if rng.random() < 0.5 else None
        big = session is not None and session.endswith("-g")
        add(lambda w, c, r, a=agent, s=session, b=big: sdk_run(w, r, a, s, b))
    rng.shuffle(jobs)
    return jobs


async def drive(world: World, jobs: list[Job]) -> None:
    queue = iter(jobs)

    async def caller() -> None:
        clients = Clients(world)
        try:
            for job in queue:
                await job(world, clients)
        finally:
            await clients.close()

    await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))


# --- the test --------------------------------------------------------------------------------


def test_ten_thousand_calls_with_thirty_percent_upstream_faults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    # A loop of its own, uvloop as `corral serve` runs on: callers, gateway and sim share it.
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(faults(tmp_path))


async def faults(tmp_path: Path) -> None:
    async with FaultySim(MIX, seed=SEED) as sim:
        sup = Supervisor.from_policy(write_policy(tmp_path, sim))
        assert isinstance(sup.counters, MemoryCounters)

        @sup.tool()
        async def get_customer(customer_id: int) -> dict[str, Any]:
            return {"id": customer_id, "name": "Ada"}

        gateway = Gateway(sup)
        async with serving(gateway) as url:
            keys = {agent: await agent_key(sup, agent) for agent in ROUTES}
            # Idle connections are dropped before uvicorn closes them (after 5 s).
            connector = aiohttp.TCPConnector(limit=CONCURRENCY, keepalive_timeout=1.0)
            async with aiohttp.ClientSession(base_url=url, connector=connector) as http:
                world = World(url, sup, keys, http)
                started = time.monotonic()
                await drive(world, workload(random.Random(SEED)))
                elapsed = time.monotonic() - started
            await gateway.sessions.end_idle(idle=0)  # (c): sessions end, as when idle
            policy = sup.policy.current
            ledger = await Ledger.read(sup.store)
            report(world.tally, sim, ledger, elapsed)
            check_answers(policy, ledger, sim, world.tally)
            await check_global_counter(sup, ledger)
            check_no_hold_in_flight(sup.counters, ledger)
            assert running(ledger) == []
            check_caps(policy, ledger)
            await check_audit(sup.store)
    assert world.tally.calls >= CALLS * 0.99
    faulted = sum(sim.drawn.values()) - sim.drawn["none"]
    assert faulted / sum(sim.drawn.values()) == pytest.approx(0.30, abs=0.03)
    # The caps were reached, not only respected: some runs halted on a budget.
    halts = Counter(run.halt_reason for run in ledger.runs.values())
    assert halts[HaltReason.BUDGET_COST.value] + halts[HaltReason.BUDGET_STEPS.value] > 0, halts


def report(tally: Tally, sim: FaultySim, ledger: Ledger, elapsed: float) -> None:
    upstream = sum(sim.drawn.values())
    faulted = upstream - sim.drawn["none"]
    charged = {tag_of(s) for s in ledger.all_steps() if s.status == "error" and s.cost_usd}
    cut = [a for a in sim.begun if a.fault is FaultKind.CUT_STREAM and a.tag not in charged]
    streams = sum(a.stream for a in cut)
    print(
        f"\n{tally.calls} calls in {elapsed:.1f} s, {len(ledger.runs)} runs; {upstream} upstream"
        f" requests, {faulted} faulted ({faulted / upstream:.1%}): {dict(sim.drawn)}; charged"
        f" nowhere: {streams} streams cut before their first delta and retried (see the xfail"
        f" test below), {len(cut) - streams} whole answers cut mid-body and retried\noutcomes:"
        f" {dict(sorted(tally.outcomes.items()))}"
    )


def check_answers(policy: Policy, ledger: Ledger, sim: FaultySim, tally: Tally) -> None:
    """(a) Per call (its tag): the upstream's whole answers and the steps that charge."""
    upstream_of = {name: model.model for name, model in policy.models.items()}
    whole: dict[str | None, list[Any]] = {}
    for answer in sim.answered:
        whole.setdefault(answer.tag, []).append(answer)
    cut = {a.tag for a in sim.begun if a.fault is FaultKind.CUT_STREAM and a.stream}
    steps = ledger.llm_steps_by_tag()
    assert None not in whole and None not in steps  # every call carried its tag
    for tag in whole.keys() | steps.keys():
        answers, made = whole.get(tag, []), steps.get(tag, [])
        assert len(made) <= 1, made  # one call, one step, whatever was retried inside it
        done = [s for s in made if s.status == "ok"]
        # An answer written whole is an ok step, and an ok step is an answer written whole.
        assert len(answers) == len(done) <= 1, (tag, answers, done)
        for answer, step in zip(answers, done, strict=True):
            assert step.model_used is not None and upstream_of[step.model_used] == answer.model
            usage = (answer.input_tokens, answer.output_tokens)
            assert (step.input_tokens, step.output_tokens) == usage, (step, answer)
            assert step.cost_usd == pytest.approx(expected_cost(policy, step), rel=1e-9)
            assert tally.reported.get(tag, usage) == usage  # and the client was told so
        # Only a stream cut after its first delta charges without an answer: at its price.
        for step in made:
            if step.status != "ok" and step.cost_usd:
                assert step.status == "error" and tag in cut, step
                assert step.cost_usd == pytest.approx(expected_cost(policy, step), rel=1e-9)
    assert set(tally.reported) <= set(whole)  # nobody was answered what the upstream did not
    check_totals(ledger)


async def check_global_counter(sup: Supervisor, ledger: Ledger) -> None:
    """The global USD counter (it outlives the runs) holds exactly what the steps cost, in
    the budget's units: no call charged twice or left out."""
    window = WINDOW_SECONDS["day"]
    days = {int(step.started_at // window) for step in ledger.all_steps()}
    used = [(await sup.counters.get(f"budget:global:usd:{day}")).used for day in days]
    assert sum(used) == sum(micro(s.cost_usd) for s in ledger.all_steps() if s.cost_usd)


# --- what the large test cannot see ----------------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="a streamed attempt cut before its first delta is retried (or falls back) and "
    "what it consumed is dropped: the adapter attaches its usage to the ProviderError "
    "(src/corral/providers/sse.py:202-204; an Anthropic stream's message_start reports the "
    "input tokens, anthropic.py:122-124), but RetryGate retries without keeping it "
    "(src/corral/gates/retry.py:64-80), as RouteGate does on fallback (route.py:41-49), so "
    "the budget gate outside them (budget.py:145-146) charges only the last attempt",
)
async def test_usage_reported_by_a_stream_cut_and_retried_is_charged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    cut = Fault(FaultKind.CUT_STREAM, after_chunks=1)  # message_start only: input reported
    async with (
        FaultySim(sequence=[cut]) as sim,
        Supervisor.from_policy(write_policy(tmp_path, sim)) as sup,
    ):
        async with sup.run(agent="planner") as run:  # route mixed: claude first
            ask = [{"role": "user", "content": tagged("t1", "Where is order 42?")}]
            async for _ in run.stream("mixed", ask, max_tokens=50):
                pass
        steps = await sup.store.list_steps(run.id)
        policy = sup.policy.current
    first, second = sim.begun
    assert (first.fault, second.fault) == (FaultKind.CUT_STREAM, None)
    assert [(s.status, s.model_used) for s in steps] == [("ok", "claude")]
    price = price_of(policy, "claude")
    # The cut attempt's input was reported (message_start) and billed; the retry answered.
    spent = (first.input_tokens + second.input_tokens) * price.input_per_mtok
    spent += second.output_tokens * price.output_per_mtok
    assert sum(s.cost_usd for s in steps) >= spent / 1_000_000


async def test_an_answer_a_loop_halt_follows_is_charged_on_its_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    draft = "Revenue grew 5% in Q3, driven by the new annual plan and lower churn."

    def says(text: str) -> dict[str, Any]:
        return {"extra_headers": {"X-Sim-Script": orjson.dumps({"text": text}).decode()}}

    async with FaultySim() as sim, Supervisor.from_policy(write_policy(tmp_path, sim)) as sup:
        # The team's two agents bounce one draft: the ping-pong detector halts them.
        planner = await sup.run(agent="planner", session="review")
        critic = await sup.run(agent="critic", session="review")
        message = "Write the Q3 summary."
        with pytest.raises(Halted) as halted:
            for n in range(10):
                ask = [{"role": "user", "content": tagged(f"p{n}", message)}]
                reply = await planner.chat("mixed", ask, **says(draft))
                ask = [{"role": "user", "content": tagged(f"c{n}", f"Verify: {reply.text}")}]
                reply = await critic.chat("default", ask, **says(f"{draft} Check again."))
                message = reply.text
        assert halted.value.reason is HaltReason.LOOP_PING_PONG
        await critic.complete()
        policy = sup.policy.current
        ledger = await Ledger.read(sup.store)
        global_used = (await sup.counters.get(_global_key())).used
    steps = {tag_of(step): step for step in ledger.all_steps()}
    for answer in sim.answered:  # the answer the halt followed too
        step = steps[answer.tag]
        assert (step.input_tokens, step.output_tokens) == (
            answer.input_tokens,
            answer.output_tokens,
        )
        assert step.cost_usd == pytest.approx(expected_cost(policy, step), rel=1e-9)
    assert global_used == sum(micro(s.cost_usd) for s in ledger.all_steps() if s.cost_usd)


def _global_key() -> str:
    return f"budget:global:usd:{int(time.time() // WINDOW_SECONDS['day'])}"
