"""kill -9 of a gateway at every phase of a call, and of an SDK agent mid-tool.

The gateway runs as a subprocess (gateway_proc.py) in front of the simulated provider,
which runs here and decides each call's phase by its model: `hang` never answers (the
call is held and written ahead, and nothing came back: before upstream), `slow` streams
a chunk every half second (killed once the client has its first chunks: mid-stream),
`late` answers whole after a second (killed once the client has the whole answer, with
the step that records it stuck behind a write lock this test holds on the store: after
the answer, before the record). Each phase is in flight twice, once as a one-request run
and once in a session, and all six die in the same SIGKILL. A second gateway then starts
on the same store and recovers the dead one's runs as it starts.

After it: no write-ahead record left; every call that went upstream has its step, the
killed ones `interrupted` and charged their worst case, never less than what the upstream
reported for it; one-request runs halted `interrupted` with a dead letter that says so;
sessions resume on their next request, in the same run, and complete when idle; no run
left running; the audit chain verifies.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from corral import Supervisor
from corral.calls import RunStatus
from corral.providers.sim import Fault, FaultKind
from corral.state import SQLiteStore
from tests.reliability import gateway_proc
from tests.reliability.harness import (
    FaultySim,
    GatewayProcess,
    Ledger,
    agent_key,
    check_audit,
    check_totals,
    expected_cost,
    price_of,
    running,
    start_agent,
    tag_of,
    tagged,
    write_policy,
)

AGENT = "crasher"
PRICE = "price: {input_per_mtok: 2.50, output_per_mtok: 10.00}"
MODELS = "".join(
    f"  {name}: {{provider: sim, model: m-{name}, context_window: 128000, {PRICE}}}\n"
    for name in ("plain", "hang", "slow", "late")
)
POLICY = {
    "models": MODELS,
    "routes": "  crash: [plain, hang, slow, late]\n",
    "agents": f"  {AGENT}: {{type: operational, route: crash}}\n",
    # The upstream may take its time: a call dies by the kill here, never by a timeout.
    "edits": {"timeout: 2s}": "timeout: 60s}"},
}
PHASES = {
    "hang": Fault(FaultKind.HANG, delay=120.0),
    "slow": Fault(FaultKind.SLOW_STREAM, delay=0.5),
    "late": Fault(FaultKind.SLOW_FIRST_BYTE, delay=1.0),
}
REACH_SECONDS = 20.0  # for the calls to reach their phase (the subprocess is busy starting)


@pytest.fixture
async def sim() -> AsyncIterator[FaultySim]:
    async with FaultySim() as provider:
        for phase, fault in PHASES.items():
            provider.set_fault(f"m-{phase}", fault)
        yield provider


@pytest.fixture
def policy(tmp_path: Path, sim: FaultySim, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SIM_API_KEY", "sim")  # the gateway subprocess inherits it
    return write_policy(tmp_path, sim, **POLICY)


async def until(check: Any, what: str, within: float = REACH_SECONDS) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class Call:
    """One chat completion through the gateway, read as it arrives."""

    def __init__(
        self, http: aiohttp.ClientSession, key: str, tag: str, model: str, session: str | None
    ) -> None:
        self.tag, self.model, self.session = tag, model, session
        self.stream = model == "slow"
        self.status: int | None = None
        self.run_id: str | None = None
        self.body = b""
        self.done = False
        headers = {"Authorization": f"Bearer {key}"}
        if session is not None:
            headers["X-Corral-Session"] = session
        body = {
            "model": model,
            "messages": [{"role": "user", "content": tagged(tag, f"Where is order {tag}?")}],
            "max_tokens": 64,
            "stream": self.stream,
        }
        self.task = asyncio.create_task(self._send(http, headers, body))

    async def _send(self, http: aiohttp.ClientSession, headers: Any, body: Any) -> None:
        try:
            async with http.post("/v1/chat/completions", json=body, headers=headers) as response:
                self.status = response.status
                self.run_id = response.headers.get("x-corral-run")
                async for chunk in response.content.iter_any():
                    self.body += chunk
            self.done = True
        except aiohttp.ClientError:  # the gateway died under it
            pass

    @property
    def chunks(self) -> int:
        return self.body.count(b"data: ")

    async def finish(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def hold_write_lock(db: Path) -> sqlite3.Connection:
    """Take the store's write lock, as another writer would: the gateway's writes wait on
    it (its busy timeout is 5 s), its reads and answers go on."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=5)
    conn.execute("BEGIN IMMEDIATE")
    return conn


async def test_kill_9_at_every_phase_of_a_call_loses_no_spending(
    policy: Path, sim: FaultySim
) -> None:
    db = policy.parent / "corral.db"
    async with Supervisor.from_policy(policy) as admin:  # the store, before any gateway
        key = await agent_key(admin, AGENT)
    first = await GatewayProcess(policy).started()
    try:
        calls = await crash(first, sim, key, db)
    finally:
        first.stop()  # a no-op once killed; a test that failed first leaves no orphan
    late = [c for c in calls.values() if c.model == "late"]
    assert all(c.status == 200 and b'"usage"' in c.body for c in late)

    second = await GatewayProcess(policy, session_idle=0.5).started()
    try:
        async with SQLiteStore(db) as store:  # recovered at startup, before any request
            runs = await store.list_runs()
            assert [await store.inflight(run.id) for run in runs] == [[]] * len(runs)
            halted = await store.list_runs(status=RunStatus.HALTED)
            assert {run.session for run in halted} == {None}  # the one-request runs
        async with aiohttp.ClientSession(base_url=second.url) as http:
            # The next request of each session: its run resumes, and answers.
            after = [Call(http, key, f"after-{p}", "plain", f"s-{p}") for p in PHASES]
            for call in after:
                await call.task
                assert call.status == 200, call.body
        async with SQLiteStore(db) as store:
            await until_sessions_end(store)
    finally:
        second.stop()

    async with Supervisor.from_policy(policy) as sup:
        ledger = await Ledger.read(sup.store)
        check_crash_invariants(sup, ledger, sim, calls, after)
        dead = {r.id: await sup.store.dead_letter_for_run(r.id) for r in ledger.runs.values()}
        for run in ledger.runs.values():
            if run.session is None:  # one-request runs: halted, dead-lettered, saying why
                assert (run.status, run.halt_reason) == (RunStatus.HALTED, "interrupted"), run
                letter = dead[run.id]
                assert letter is not None and letter.reason == "interrupted"
                assert letter.packet["rule"] == {"rule": "recovery", "interrupted_calls": 1}
                assert letter.packet["usage"]["cost_usd"] == pytest.approx(run.cost_usd)
            else:  # sessions: resumed in the same run, then completed when idle
                assert run.status is RunStatus.COMPLETED, run
                assert dead[run.id] is None
        await check_audit(sup.store)


async def crash(
    first: GatewayProcess, sim: FaultySim, key: str, db: Path
) -> dict[tuple[str, str | None], Call]:
    """Put a call of each phase in flight, twice (alone and in a session), and SIGKILL the
    gateway serving them all at once."""
    async with aiohttp.ClientSession(base_url=first.url) as http:
        # A session with a call answered and recorded before the crash.
        opened = Call(http, key, "plain-1", "plain", "s-late")
        await opened.task
        assert opened.status == 200, opened.body
        calls = {
            (phase, session): Call(http, key, f"{phase}-{session or 'one'}", phase, session)
            for phase in PHASES
            for session in (None, f"s-{phase}")
        }
        late = [c for c in calls.values() if c.model == "late"]

        def reached(phase: str) -> int:
            return sim.requests[f"/v1/chat/completions m-{phase}"]

        await until(lambda: all(reached(phase) == 2 for phase in PHASES), "every call upstream")
        # The late answers are on their way: from now on no step can be written.
        lock = hold_write_lock(db)
        try:
            await until(lambda: all(c.done for c in late), "the late answers")
            streams = [c for c in calls.values() if c.stream]
            await until(lambda: all(c.chunks >= 3 for c in streams), "the first stream chunks")
            assert not any(c.done for c in streams)
            first.kill()
        finally:
            lock.rollback()
            lock.close()
        for call in calls.values():
            await call.finish()
    return calls


async def until_sessions_end(store: SQLiteStore) -> None:
    async def check() -> bool:
        return not await store.list_runs(status=RunStatus.RUNNING)

    deadline = time.monotonic() + REACH_SECONDS
    while not await check():
        assert time.monotonic() < deadline, "the sessions never ended"
        await asyncio.sleep(0.05)


def check_crash_invariants(
    sup: Supervisor,
    ledger: Ledger,
    sim: FaultySim,
    calls: dict[tuple[str, str | None], Call],
    after: list[Call],
) -> None:
    policy = sup.policy.current
    assert ledger.inflight == {run_id: 0 for run_id in ledger.runs}  # every record settled
    assert running(ledger) == []
    check_totals(ledger)
    by_session = {r.session: r for r in ledger.runs.values() if r.session is not None}
    assert len(by_session) == len(PHASES)  # a session is one run, before and after the crash
    oneshots = [r for r in ledger.runs.values() if r.session is None]
    assert len(oneshots) == len(PHASES)
    for call in after:  # the session's next request was served by its old run
        assert call.run_id == by_session[call.session].id
    # Each killed call: one interrupted step, charged at least what the upstream reported.
    answered = {a.tag: a for a in sim.begun}
    for (phase, session), call in calls.items():
        if session is not None:
            run = by_session[session]
        elif call.run_id is not None:  # its answer had begun: it named its run
            run = ledger.runs[call.run_id]
        else:  # the hanging one: the one-request run no answer named
            named = {c.run_id for c in calls.values()}
            [run] = [r for r in oneshots if r.id not in named]
        [interrupted] = [s for s in ledger.steps[run.id] if s.status == "interrupted"]
        assert interrupted.cost_usd > 0 and interrupted.input_tokens > 0, interrupted
        price = price_of(policy, phase)
        upstream = answered.get(call.tag)
        if phase == "hang":
            assert upstream is None  # it never answered
        else:
            assert upstream is not None, call.tag
            reported = (
                upstream.input_tokens * price.input_per_mtok
                + upstream.output_tokens * price.output_per_mtok
            ) / 1_000_000
            assert interrupted.cost_usd >= reported, (interrupted, upstream)
            assert interrupted.output_tokens >= upstream.output_tokens
    # The calls that were recorded (before the crash and after it) are charged exactly.
    for step in ledger.all_steps():
        if step.status == "ok" and step.kind == "llm":
            upstream = answered[tag_of(step)]
            assert (step.input_tokens, step.output_tokens) == (
                upstream.input_tokens,
                upstream.output_tokens,
            )
            assert step.cost_usd == pytest.approx(expected_cost(policy, step), rel=1e-9)


# --- an SDK agent, killed mid-tool -------------------------------------------------------------


async def test_kill_9_of_an_sdk_agent_mid_tool_then_resume(policy: Path, sim: FaultySim) -> None:
    journal = policy.parent / "journal.txt"

    def lines() -> list[str]:
        return journal.read_text().splitlines() if journal.exists() else []

    agent = start_agent(policy, journal)
    try:
        await until(
            lambda: agent.poll() is not None or any(x.startswith("start") for x in lines()),
            "the agent inside its tool",
        )
    finally:
        agent.kill()  # SIGKILL inside the tool's body
        _, errors = agent.communicate()
    assert agent.returncode == -signal.SIGKILL, errors
    run_id = lines()[0].removeprefix("run ")

    async with Supervisor.from_policy(policy) as sup:
        # Recovery settles the dead agent's call in flight; its run stays running, unowned.
        assert await sup.recover() == [run_id]
        assert await sup.store.inflight(run_id) == []
        record = await sup.store.get_run(run_id)
        assert record is not None and record.status is RunStatus.RUNNING and record.owner is None
        gateway_proc.register_stall(sup, journal, stall=False)
        async with sup.resume(run_id) as run:
            await gateway_proc.agent_work(run, journal)
        ledger = await Ledger.read(sup.store)
        await check_audit(sup.store)
        policy_now = sup.policy.current
    steps = ledger.steps[run_id]
    assert [(s.kind, s.status) for s in steps] == [
        ("llm", "ok"),  # answered and recorded before the crash
        ("tool", "interrupted"),  # the body the kill cut short: charged as a tool call
        ("tool", "ok"),  # run again after the resume, under the same key
        ("llm", "ok"),
    ]
    starts = [line for line in lines() if line.startswith("start")]
    assert len(starts) == 2 and starts[0] == starts[1]  # the same call, the same key
    assert ledger.runs[run_id].status is RunStatus.COMPLETED
    assert ledger.inflight[run_id] == 0
    check_totals(ledger)
    answered = {a.tag: a for a in sim.answered}
    for step in steps:
        if step.kind == "llm":  # charged exactly what the upstream reported
            upstream = answered[tag_of(step)]
            usage = (upstream.input_tokens, upstream.output_tokens)
            assert (step.input_tokens, step.output_tokens) == usage
            assert step.cost_usd == pytest.approx(expected_cost(policy_now, step), rel=1e-9)
