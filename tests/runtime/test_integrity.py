"""Counters rebuilt from the store after a restart, write-ahead records, and bounded counters."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import corral
from corral import Halted, HaltReason, Supervisor
from corral.calls import RunStatus
from corral.providers.sim import Fault, FaultKind, SimProvider
from corral.state import InflightRecord, StoreError
from tests.runtime.agent_proc import Journal
from tests.runtime.conftest import example_policy

TEAM_PROC = Path(__file__).with_name("team_proc.py")

TEAM = {
    "steps: 40": "steps: 6",
    "agents:\n": (
        "agents:\n"
        "  drafter: {type: operational, route: default, team: qa}\n"
        "  checker: {type: operational, route: default, team: qa}\n"
    ),
}


def kill_when_ready(policy: Path, journal: Journal, calls: int) -> None:
    """Run team_proc.py until it has made `calls` calls, then SIGKILL it."""
    source = str(Path(corral.__file__).resolve().parents[1])
    tests_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, tests_root])}
    agents = subprocess.Popen(
        [sys.executable, str(TEAM_PROC), str(policy), str(journal.path), str(calls)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while "ready" not in journal.lines() and agents.poll() is None:
            assert time.monotonic() < deadline, journal.lines()
            time.sleep(0.02)
    finally:
        agents.kill()  # SIGKILL: no handler, no cleanup
        _, errors = agents.communicate()
    assert agents.returncode == -signal.SIGKILL, errors


def ask(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Check invoice {n * 7919 % 10007}, please."}]


@pytest.fixture
def policy(tmp_path: Path, sim: SimProvider, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    return example_policy(tmp_path, sim, TEAM)


async def test_a_restart_restores_the_spending_of_every_run_in_the_session(policy: Path) -> None:
    first = Supervisor.from_policy(policy)
    analyzer = await first.run(agent="drafter", session="s")
    verifier = await first.run(agent="checker", session="s")
    for n in range(3):
        await analyzer.chat("default", ask(n), max_tokens=5)
    for n in range(2):
        await verifier.chat("default", ask(10 + n), max_tokens=5)
    # The process "dies": nothing completes, nothing is settled, its lease is gone.
    await first.store.drop_leases([first.owner])
    await first.store.close()
    await first._http.close()

    second = Supervisor.from_policy(policy)
    resumed = await second.resume(analyzer.id)
    # Five of the session's six steps were spent by the two runs together, not three.
    await resumed.chat("default", ask(20), max_tokens=5)
    with pytest.raises(Halted) as halted:
        await resumed.chat("default", ask(21), max_tokens=5)
    assert halted.value.reason is HaltReason.BUDGET_STEPS
    assert halted.value.packet["rule"]["level"] == "session"
    runs = await second.store.list_runs(session="s")
    assert sum(r.steps for r in runs) == 6
    await second.close()


async def test_the_fleet_window_is_rebuilt_from_the_steps_in_it(
    tmp_path: Path, sim: SimProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    policy = example_policy(
        tmp_path, sim, {"fleet:   {usd: 200, per: day}": "fleet: {usd: 0.0004, per: day}"}
    )
    first = Supervisor.from_policy(policy)
    async with first.run(agent="support") as run:
        await run.chat("default", ask(1), max_tokens=5)
    spent = (await first.store.get_run(run.id)).cost_usd  # type: ignore[union-attr]
    await first.close()
    second = Supervisor.from_policy(policy)
    run = await second.run(agent="support")
    key = next(c for c in run.context.caps if c.level == "fleet" and c.dimension == "usd")
    used = await second.counters.get(f"{key.key}:{int(second._clock() // 86400)}")
    assert used.used >= round(spent * 1_000_000)
    await run.complete()
    await second.close()


async def test_a_call_in_flight_when_its_process_died_is_charged_its_worst_case(
    policy: Path, sim: SimProvider
) -> None:
    first = Supervisor.from_policy(policy)
    run = await first.run(agent="support", session="crash")
    await run.chat("default", ask(1), max_tokens=5)
    # What a process that died mid-call leaves: a write-ahead record, and a lease gone.
    record = InflightRecord(
        "gone/1", run.id, first.owner, 2, "llm", "default", 1.0, 120, 400, 0.0043
    )
    await first.store.begin_call(record)
    await first.store.drop_leases([first.owner])
    before = await first.store.get_run(run.id)
    assert before is not None

    second = Supervisor.from_policy(policy, store=first.store)
    resumed = await second.resume(run.id)
    steps = await second.store.list_steps(run.id)
    assert [(s.status, s.output_tokens, s.cost_usd) for s in steps][-1] == (
        "interrupted",
        400,
        0.0043,
    )
    assert await second.store.inflight(run.id) == []
    stored = await second.store.get_run(run.id)
    assert stored is not None
    assert stored.cost_usd == pytest.approx(before.cost_usd + 0.0043)
    assert stored.steps == before.steps + 1
    kinds = [e.kind for e in await second.store.list_audit()]
    assert "run.recovered" in kinds
    assert (await second.audit.verify()).ok
    await resumed.complete()
    await second.close()


async def test_a_one_request_run_of_a_dead_process_halts_interrupted(policy: Path) -> None:
    first = Supervisor.from_policy(policy)
    run = await first.run(agent="support", oneshot=True)
    record = InflightRecord("gone/2", run.id, first.owner, 1, "llm", "default", 1.0, 50, 100, 0.001)
    await first.store.begin_call(record)
    await first.store.drop_leases([first.owner])

    second = Supervisor.from_policy(policy, store=first.store)
    assert await second.recover() == [run.id]
    stored = await second.store.get_run(run.id)
    assert stored is not None
    assert (stored.status, stored.halt_reason) == (RunStatus.HALTED, "interrupted")
    dead = await second.store.dead_letter_for_run(run.id)
    assert dead is not None and dead.packet["rule"] == {"rule": "recovery", "interrupted_calls": 1}
    assert dead.packet["usage"]["cost_usd"] == pytest.approx(0.001)
    await second.close()


async def test_a_live_process_s_runs_are_not_taken_over(policy: Path) -> None:
    first = Supervisor.from_policy(policy)
    run = await first.run(agent="support", session="mine")
    second = Supervisor.from_policy(policy, store=first.store)
    assert await second.recover() == []
    with pytest.raises(ValueError, match="served by another live process"):
        await second.resume(run.id)
    await run.complete()
    await first.close()


async def test_finished_runs_leave_no_counters_behind(policy: Path, sim: SimProvider) -> None:
    sup = Supervisor.from_policy(policy)
    baseline = None
    for n in range(30):
        async with sup.run(agent="support", task=f"t{n}", session=f"s{n}") as run:
            await run.chat("default", ask(n), max_tokens=5)
        if baseline is None:
            baseline = len(sup.counters)  # type: ignore[arg-type]
    assert len(sup.counters) == baseline  # type: ignore[arg-type]
    keys = list(sup.counters._counters)  # type: ignore[attr-defined]
    assert not [k for k in keys if k.startswith(("budget:task:", "budget:session:"))]
    await sup.close()


async def test_a_halted_run_keeps_its_counters_until_its_calls_in_flight_end(
    policy: Path, sim: SimProvider
) -> None:
    sim.set_fault("gpt-4o", Fault(FaultKind.SLOW_FIRST_BYTE, delay=0.2))
    sup = Supervisor.from_policy(policy)
    run = await sup.run(agent="support", session="burst")

    calls = [run.chat("default", ask(n), max_tokens=5) for n in range(12)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    ok = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(ok) == 6  # the session's six steps, not one more
    stored = await sup.store.get_run(run.id)
    assert stored is not None and stored.steps == 6
    await sup.close()


async def test_after_a_kill_9_between_calls_of_two_agents_the_session_cap_holds(
    policy: Path, tmp_path: Path
) -> None:
    """The incident: 39 of 40 steps used before a kill -9, 49 recorded after the restart,
    because each resumed run restored only its own spending. Here: 6 steps, 5 used."""
    journal = Journal(tmp_path / "journal.txt")
    await asyncio.to_thread(kill_when_ready, policy, journal, 5)
    run_ids = [line.removeprefix("run ") for line in journal.lines() if line.startswith("run ")]

    sup = Supervisor.from_policy(policy)
    analyzer, verifier = [await sup.resume(run_id) for run_id in run_ids]
    await verifier.chat("default", ask(100), max_tokens=5)  # the sixth step
    with pytest.raises(Halted) as halted:
        await analyzer.chat("default", ask(101), max_tokens=5)
    assert halted.value.reason is HaltReason.BUDGET_STEPS
    runs = await sup.store.list_runs(session="shared")
    assert sum(r.steps for r in runs) == 6
    assert (await sup.audit.verify()).ok
    await sup.close()


async def test_a_write_ahead_the_store_refuses_sends_nothing_and_holds_nothing(
    policy: Path, sim: SimProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    sup = Supervisor.from_policy(policy)
    run = await sup.run(agent="support", session="down")

    async def refused(record: InflightRecord) -> None:
        raise StoreError("disk I/O error")

    monkeypatch.setattr(sup.store, "begin_call", refused)
    with pytest.raises(StoreError, match="disk I/O error"):
        await run.chat("default", ask(1), max_tokens=5)
    assert sum(sim.requests.values()) == 0  # fail closed: nothing went upstream uncounted
    counters = sup.counters._counters  # type: ignore[attr-defined]
    assert all(c.held == 0 for c in counters.values())
    monkeypatch.undo()
    await run.complete()
    await sup.close()
