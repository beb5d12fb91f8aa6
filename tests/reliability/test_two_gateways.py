"""Several gateways, one truth: two `corral serve` processes sharing one store and Redis
counters hold caps, kills and breakers as one gateway does."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis

from corral.gateway.keys import issue
from corral.policy import load_policy
from corral.providers.sim import Fault, FaultKind, SimProvider
from corral.runtime.sealing import open_policy_store
from tests.reliability.harness import GatewayProcess, write_policy
from tests.state.conftest import postgres_admin

REDIS_DB = 13  # this suite's own database on the machine's Redis, emptied per test
COUNTERS = f"redis://127.0.0.1:6379/{REDIS_DB}"
FLEET_USD = 0.01
MAX_TOKENS = 200
CONCURRENT = 256


@pytest.fixture
async def sim() -> AsyncIterator[SimProvider]:
    async with SimProvider() as provider:
        yield provider


@pytest.fixture
async def fresh_redis() -> AsyncIterator[None]:
    client = redis.Redis.from_url(COUNTERS)
    try:
        await client.flushdb()
    except redis.ConnectionError as exc:  # CI starts Redis: not finding it is a failure
        pytest.fail(f"no Redis at {COUNTERS} ({exc}); .ci/run starts one")
    yield
    await client.flushdb()
    await client.aclose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """One SQLite file both gateways open, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/corral.db"
        return
    name = f"corral_two_gateways_{uuid.uuid4().hex}"
    with postgres_admin() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with postgres_admin() as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def policy(
    tmp_path: Path,
    sim: SimProvider,
    fresh_redis: None,
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    monkeypatch.setenv("SIM_API_KEY", "sim")  # the gateway processes inherit it
    return write_policy(
        tmp_path,
        sim,
        edits={
            f"store: sqlite:///{tmp_path}/corral.db": f"store: {store_url}",
            "counters: memory": f"counters: {COUNTERS}",
            "fleet:   {usd: 200, per: day}": f"fleet:   {{usd: {FLEET_USD}, per: day}}",
            # one request of its own each: the fleet's cap is what binds
            "open_for: 100ms": "open_for: 30s",
        },
    )


async def key_for(policy: Path, agent: str = "support") -> str:
    async with open_policy_store(load_policy(policy, require_keys=False)) as store:
        key, _ = await issue(store, agent=agent, admin=False, expires_in=None, now=time.time())
    return key


@pytest.fixture
async def nodes(policy: Path) -> AsyncIterator[list[GatewayProcess]]:
    started = [GatewayProcess(policy), GatewayProcess(policy)]
    try:
        yield [await node.started() for node in started]
    finally:
        for node in started:
            node.stop()


async def spent(policy: Path) -> float:
    async with open_policy_store(load_policy(policy, require_keys=False)) as store:
        return sum(run.cost_usd for run in await store.list_runs(limit=100_000))


async def test_requests_spread_over_two_gateways_never_cross_the_fleets_cap(
    policy: Path, nodes: list[GatewayProcess]
) -> None:
    key = await key_for(policy)
    clients = [
        httpx.AsyncClient(base_url=node.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        for node in nodes
    ]

    async def ask(n: int) -> int:
        body = {
            "model": "default",
            "messages": [{"role": "user", "content": f"Where is order {n}?"}],
            "max_tokens": MAX_TOKENS,
        }
        answer = await clients[n % 2].post("/v1/chat/completions", json=body)
        return answer.status_code

    try:
        statuses = await asyncio.gather(*(ask(n) for n in range(CONCURRENT)))
    finally:
        for client in clients:
            await client.aclose()
    assert set(statuses) <= {200, 403}, statuses
    assert statuses.count(200) > 0 and statuses.count(403) > 0  # the cap bound
    total = await spent(policy)
    worst = MAX_TOKENS * 10.0 / 1_000_000 + 0.0005  # one call's worst case on `smart`
    assert total <= FLEET_USD + 1e-9
    assert total >= FLEET_USD - worst


async def test_a_kill_through_one_gateway_stops_the_run_on_the_other(
    policy: Path, nodes: list[GatewayProcess], sim: SimProvider
) -> None:
    sim.set_fault("gpt-4o", Fault(FaultKind.SLOW_STREAM, delay=0.5))
    key = await key_for(policy)
    headers = {"Authorization": f"Bearer {key}", "X-Corral-Session": "long"}
    body = {"model": "default", "messages": [{"role": "user", "content": "Tell me a story."}],
            "max_tokens": MAX_TOKENS, "stream": True}  # fmt: skip
    first, second = nodes
    admin = await _admin_key(policy)
    async with (
        httpx.AsyncClient(base_url=first.url, headers=headers, timeout=60) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as answer,
        httpx.AsyncClient(base_url=second.url, timeout=30) as other,
    ):
        run_id = answer.headers["x-corral-run"]
        chunks = answer.aiter_bytes()
        await anext(chunks)  # the stream is under way on the first gateway
        # The other gateway's admin API takes the kill (any node can).
        killed = await other.post(
            f"/admin/runs/{run_id}/kill", headers={"Authorization": f"Bearer {admin}"}
        )
        assert killed.status_code in (200, 202), killed.text
        asked = time.monotonic()
        rest = b"".join([piece async for piece in chunks])
        stopped = time.monotonic() - asked
    assert b"killed" in rest
    assert stopped < 5.0  # within a poll of the first gateway's watcher (0.2 s), generously
    async with open_policy_store(load_policy(policy, require_keys=False)) as store:
        record = await store.get_run(run_id)
    assert record is not None and record.halt_reason == "killed"


async def test_a_breaker_opened_on_one_gateway_is_open_on_the_other(
    policy: Path, nodes: list[GatewayProcess], sim: SimProvider
) -> None:
    for model in ("gpt-4o", "gpt-4o-mini"):
        sim.set_fault(model, Fault(FaultKind.ERROR, status=503))
    key = await key_for(policy)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "smart", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    first, second = nodes
    async with httpx.AsyncClient(base_url=first.url, headers=headers, timeout=60) as client:
        for _ in range(12):  # the example's breaker: 10 calls at least, half failing
            await client.post("/v1/chat/completions", json=body)
    before = sum(sim.requests.values())
    async with httpx.AsyncClient(base_url=second.url, headers=headers, timeout=60) as client:
        refused = await client.post("/v1/chat/completions", json=body)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "circuit_open"
    assert sum(sim.requests.values()) == before  # the second gateway did not try upstream


async def _admin_key(policy: Path) -> str:
    async with open_policy_store(load_policy(policy, require_keys=False)) as store:
        key, _ = await issue(store, agent=None, admin=True, expires_in=None, now=time.time())
    return key


async def test_a_rate_limit_share_holds_across_both_gateways(
    tmp_path: Path, sim: SimProvider, fresh_redis: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    rpm = 30  # a burst of 30 requests, then one every 2 s
    policy = write_policy(
        tmp_path,
        sim,
        edits={
            "counters: memory": f"counters: {COUNTERS}",
            "rate_limit: {requests_per_minute: 6000000, tokens_per_minute: 1000000000, "
            "priority: high}": f"rate_limit: {{requests_per_minute: {rpm}, priority: high, "
            "max_wait: 0s}",
        },
    )
    nodes = [await GatewayProcess(policy).started(), await GatewayProcess(policy).started()]
    try:
        key = await key_for(policy)
        clients = [
            httpx.AsyncClient(
                base_url=node.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
            )
            for node in nodes
        ]
        body = {"model": "default", "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 5}  # fmt: skip
        started = time.monotonic()
        answers = await asyncio.gather(
            *(clients[n % 2].post("/v1/chat/completions", json=body) for n in range(80))
        )
        took = time.monotonic() - started
        for client in clients:
            await client.aclose()
    finally:
        for node in nodes:
            node.stop()
    admitted = sum(answer.status_code == 200 for answer in answers)
    refused = [a for a in answers if a.status_code == 429]
    assert admitted + len(refused) == 80
    # One bucket for both: the burst, plus what refilled while the requests ran.
    assert rpm <= admitted <= rpm + int(took * rpm / 60) + 1
    assert refused and refused[0].json()["error"]["code"] == "rate_limited"
