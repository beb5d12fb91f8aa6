"""20,000 requests over 2,000 sessions: what the gateway holds comes back when they end.

The gateway runs as a process of its own (gateway_proc.py, so its RSS is the gateway's
alone and it has a core to itself), the simulated provider and 32 clients here. Each
client takes a session and makes its ten requests, the conversation growing by a turn
each time as a chat client sends it; sessions end as in production, on the gateway's idle
sweep (idle after 1 s here). Agents of their own and a team's two agents (sharing their
sessions), both doors, streamed and not.

After the first 400 sessions (4,000 requests: by then the allocator has grown its arenas
to the load) every session is ended and what the gateway holds is measured: counter keys,
sessions in memory, the sessions gauge, RSS (after a full collection). After the other
1,600, ended the same way: the same counter keys (the fleet, global and retry-budget
windows stay, a fixed few), no session, and RSS within 5 % of the measure after warm-up.

Also here: counter keys of windows that passed, and sessions ending while in use.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from corral import Supervisor
from corral.aio import loop_factory
from corral.calls import RunStatus
from corral.gateway.app import Gateway
from corral.providers.sim import SimProvider
from corral.state import RunRecord, SQLiteStore
from tests.reliability.harness import TEAM, GatewayProcess, agent_key, write_policy

SESSIONS = 2_000
REQUESTS_PER_SESSION = 10
WARM_UP_SESSIONS = 400
CONCURRENCY = 32
SESSION_IDLE = 1.0  # seconds; the gateway sweeps idle sessions this often too
RSS_GROWTH = 0.05
AGENTS = {"support": "default", "summarizer": "default", "planner": "mixed", "critic": "default"}
TOPICS = ("order", "invoice", "parcel", "refund", "ticket", "account", "shipment", "claim")
# A day's retry-budget window, as the fleet and global budgets have, so that no window
# passes during the test and the keys left can be compared one for one (keys of windows
# that passed are pruned in bulk: tests/state/test_counters.py).
POLICY_EDITS = {"budget: 0.5}": "budget: 0.5, budget_window: 1d}"}
# Counter keys that outlive every session: one per window of these.
WINDOWED = ("budget:fleet:", "budget:global:", "retry:")


# --- the workload ------------------------------------------------------------------------------


async def converse(
    http: aiohttp.ClientSession, keys: dict[str, str], rng: random.Random, session: str
) -> Counter[str]:
    """One session's requests, one after the other; a team session alternates its agents."""
    agents = (
        ("planner", "critic")
        if session.startswith(TEAM)
        else (rng.choice(("support", "summarizer")),)
    )
    messages: list[dict[str, Any]] = []
    outcomes: Counter[str] = Counter()
    for turn in range(REQUESTS_PER_SESSION):
        agent = agents[turn % len(agents)]
        # Ids and numbers as real requests carry them: every request asks something new.
        topic, n, customer = rng.choice(TOPICS), rng.randrange(10**6), rng.randrange(10**4)
        ask = f"Status of {topic} {n} for customer {customer}?"
        messages.append({"role": "user", "content": ask})
        door = rng.choice(("/v1/chat/completions", "/v1/messages"))
        stream = rng.random() < 0.5
        body = {"model": AGENTS[agent], "messages": messages, "max_tokens": 64, "stream": stream}
        headers = {"Authorization": f"Bearer {keys[agent]}", "X-Corral-Session": session}
        async with http.post(door, json=body, headers=headers) as response:
            raw = await response.read()
        assert response.status == 200, raw
        outcomes[f"{door} {'stream' if stream else 'whole'}"] += 1
        messages.append(
            {"role": "assistant", "content": "(streamed)" if stream else _text(door, raw)}
        )
    return outcomes


def _text(door: str, raw: bytes) -> str:
    answer = orjson.loads(raw)
    if door == "/v1/messages":
        return "".join(block.get("text", "") for block in answer["content"])
    return str(answer["choices"][0]["message"]["content"])


async def sessions_through(
    http: aiohttp.ClientSession, keys: dict[str, str], names: list[str], seed: int
) -> Counter[str]:
    queue = iter(names)
    total: Counter[str] = Counter()

    async def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        for session in queue:
            total.update(await converse(http, keys, rng, session))

    await asyncio.gather(*(worker(n) for n in range(CONCURRENCY)))
    return total


async def settle(http: aiohttp.ClientSession) -> dict[str, Any]:
    """Wait for the idle sweep to end every session (the gateway's own end_idle, as in
    production: a second caller would race it, see test_a_session_in_use_...), then read
    what the gateway holds, and its sessions gauge."""
    deadline = time.monotonic() + 30
    while True:
        await asyncio.sleep(SESSION_IDLE)
        async with http.get("/_probe/state") as response:
            state: dict[str, Any] = await response.json()
        if state["sessions"] == 0:
            break
        assert time.monotonic() < deadline, state["sessions"]
    async with http.get("/metrics") as response:
        text = await response.text()
    found = re.search(r"^corral_gateway_sessions (\S+)$", text, re.MULTILINE)
    assert found is not None, text
    state["gauge"] = float(found.group(1))
    return state


@dataclass
class Measured:
    requests: int
    runs: list[RunRecord]
    before: dict[str, Any]  # what the gateway held after warm-up, all sessions ended
    after: dict[str, Any]  # and after all
    elapsed: float

    @property
    def growth(self) -> float:
        return float(self.after["rss"]) / self.before["rss"] - 1


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Measured]:
    """The workload, run once for the tests below."""
    with pytest.MonkeyPatch.context() as patch, asyncio.Runner(loop_factory=loop_factory()) as r:
        patch.setenv("SIM_API_KEY", "sim")
        found = r.run(workload(tmp_path_factory.mktemp("memory")))
    print(
        f"\n{found.requests} requests in {len(found.runs)} session runs, {found.elapsed:.1f} s;"
        f" counter keys {len(found.before['counter_keys'])} -> {len(found.after['counter_keys'])},"
        f" sessions {found.before['sessions']} -> {found.after['sessions']}, gateway RSS"
        f" {found.before['rss'] / 2**20:.1f} MB -> {found.after['rss'] / 2**20:.1f} MB"
        f" ({found.growth:+.1%})"
    )
    yield found


async def workload(tmp_path: Path) -> Measured:
    async with SimProvider() as sim:
        policy = write_policy(tmp_path, sim, edits=POLICY_EDITS)
        async with Supervisor.from_policy(policy) as admin:
            keys = {agent: await agent_key(admin, agent) for agent in AGENTS}
        gateway = await GatewayProcess(policy, session_idle=SESSION_IDLE).started()
        names = [f"{TEAM}-{n}" if n % 4 == 0 else f"s-{n}" for n in range(SESSIONS)]
        connector = aiohttp.TCPConnector(limit=CONCURRENCY, keepalive_timeout=SESSION_IDLE / 2)
        try:
            async with aiohttp.ClientSession(base_url=gateway.url, connector=connector) as http:
                started = time.monotonic()
                warm = await sessions_through(http, keys, names[:WARM_UP_SESSIONS], seed=1)
                before = await settle(http)
                # With CORRAL_TRACEMALLOC set, the gateway names what grows from here.
                async with http.post("/_probe/baseline") as response:
                    assert response.status == 200
                rest = await sessions_through(http, keys, names[WARM_UP_SESSIONS:], seed=2)
                after = await settle(http)
                elapsed = time.monotonic() - started
        except BaseException:
            print(gateway.log()[-20_000:])  # pytest shows it with the failure
            raise
        finally:
            gateway.stop()
        async with SQLiteStore(policy.parent / "corral.db") as store:
            runs = await store.list_runs(limit=10**6)
    return Measured(sum((warm + rest).values()), runs, before, after, elapsed)


# --- the tests ---------------------------------------------------------------------------------


def test_sessions_and_counters_return_to_their_baseline(measured: Measured) -> None:
    assert measured.requests == SESSIONS * REQUESTS_PER_SESSION
    # Every session ended, none left running: a team's session is one run per agent (a
    # session idle between two requests, as under load it may be, ends and opens again).
    assert len(measured.runs) >= SESSIONS + SESSIONS // 4
    assert {run.status for run in measured.runs} == {RunStatus.COMPLETED}
    before, after = measured.before, measured.after
    # What finished sessions held is gone: only the windows of long-lived budgets remain.
    assert after["counter_keys"] == before["counter_keys"]
    assert all(key.startswith(WINDOWED) for key in after["counter_keys"]), after["counter_keys"]
    assert before["held"] == after["held"] == {}
    assert before["sessions"] == after["sessions"] == 0
    assert before["gauge"] == after["gauge"] == 0


def test_rss_after_warm_up_grows_less_than_5_percent(measured: Measured) -> None:
    assert measured.growth <= RSS_GROWTH, measured.after.get("grown")


# --- sessions ending in use ------------------------------------------------


async def test_a_session_in_use_is_not_ended_by_the_idle_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    async with SimProvider() as sim:
        gateway = Gateway(Supervisor.from_policy(write_policy(tmp_path, sim)))
        sessions = gateway.sessions
        try:
            for name in ("s1", "s2"):
                run = await sessions.enter("support", name, None)
                await sessions.leave(run, name)
            sweep = asyncio.create_task(sessions.end_idle(idle=0))
            await asyncio.sleep(0)  # the sweep is completing s1 (it waits for the store)
            run = await sessions.enter("support", "s2", None)  # a request of s2 arrives
            await sweep
            assert run.status is RunStatus.RUNNING  # in use: not idle, not ended
            await sessions.leave(run, "s2")
        finally:
            await gateway.close()
