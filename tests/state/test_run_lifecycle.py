"""A run's lifecycle in each store: steps with the run, halt to the DLQ, kill, reopen."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from corral.calls import HaltReason, RunStatus
from corral.state import (
    ConstraintError,
    NotFoundError,
    RunRecord,
    SQLiteStore,
    StepRecord,
    Store,
)
from corral.state.sqlite import _KILL_REQUESTS
from corral.state.sqlite_schema import MIGRATIONS, migrate
from corral.telemetry.audit import AuditLog
from tests.state.conftest import FakeClock

T0 = 1_700_000_000.0
RUN = RunRecord(id="run-1", agent="support", agent_type="triage", created_at=T0, updated_at=T0)
PACKET = {"goal": "refund", "steps": [{"tool": "refund", "args": {"amount": 5}}], "usd": 0.2}


def run(run_id: str = "run-1", **changes: Any) -> RunRecord:
    return replace(RUN, id=run_id, **changes)


def halted(
    run_id: str = "run-1", reason: str = HaltReason.BUDGET_COST, **changes: Any
) -> RunRecord:
    return run(run_id, status=RunStatus.HALTED, halt_reason=reason, ended_at=T0 + 9, **changes)


def step(seq: int, run_id: str = "run-1") -> StepRecord:
    return StepRecord(run_id, seq, "tool", "get_customer", {"id": seq}, T0 + seq, T0 + seq + 0.5)


async def stored(store: Store, run_id: str = "run-1") -> RunRecord:
    found = await store.get_run(run_id)
    assert found is not None
    return found


# topup column and migration 2


async def test_topup_round_trips_and_save_run_writes_it(store: Store) -> None:
    await store.create_run(run(topup={"usd": 0.2, "tokens": 5000}))
    assert (await stored(store)).topup == {"usd": 0.2, "tokens": 5000}
    await store.save_run(run(topup={"usd": 0.5}))
    assert (await stored(store)).topup == {"usd": 0.5}
    await store.save_run(run())
    assert (await stored(store)).topup is None


async def test_a_version_1_file_with_data_migrates_to_the_latest(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, MIGRATIONS[:1]) == 1
    # Rows as Corral 1 wrote them: no topup column yet.
    conn.execute(
        "INSERT INTO runs (id, agent, agent_type, created_at, updated_at, status, halt_reason,"
        " ended_at, input_tokens, output_tokens, cost_usd, steps, tool_calls, outcome)"
        " VALUES ('old', 'support', 'triage', ?, ?, 'halted', 'timeout', ?, 10, 5, 0.01, 2, 1,"
        " '{\"answer\": 42}')",
        (T0, T0 + 1, T0 + 2),
    )
    conn.execute(
        "INSERT INTO dead_letters (run_id, reason, packet, status, created_at, updated_at)"
        " VALUES ('old', 'timeout', '{\"goal\": \"g\"}', 'open', ?, ?)",
        (T0 + 2, T0 + 2),
    )
    conn.close()

    async with SQLiteStore(path) as store:
        assert await store.get_run("old") == RunRecord(
            id="old", agent="support", agent_type="triage", created_at=T0, updated_at=T0 + 1,
            status=RunStatus.HALTED, halt_reason="timeout", ended_at=T0 + 2, input_tokens=10,
            output_tokens=5, cost_usd=0.01, steps=2, tool_calls=1, outcome={"answer": 42},
        )  # fmt: skip
        dead = await store.dead_letter_for_run("old")
        assert dead is not None and (dead.reason, dead.packet) == ("timeout", {"goal": "g"})
        reopened = await store.reopen_run("old", topup={"wall_clock": 60}, at=T0 + 3)
        assert reopened.topup == {"wall_clock": 60}
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 5
    check.close()


# kill requests


async def test_kill_requests_lists_only_running_runs_to_kill(store: Store) -> None:
    assert await store.kill_requests() == {}
    await store.create_run(run("calm"))
    await store.create_run(run("doomed"))
    await store.create_run(run("also-doomed"))
    await store.create_run(run("stopped", kill_requested_at=T0 + 1))
    await store.halt_run(
        halted("stopped", HaltReason.KILLED, kill_requested_at=T0 + 1), {"why": "killed"}
    )
    assert await store.request_kill("doomed", T0 + 5)
    assert await store.request_kill("also-doomed", T0 + 6)
    assert await store.kill_requests() == {"doomed": T0 + 5, "also-doomed": T0 + 6}


async def test_kill_requests_reads_only_its_index(sqlite_store: Store) -> None:
    with sqlite3.connect(sqlite_store.path) as conn:
        plan = " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {_KILL_REQUESTS}"))
    conn.close()
    assert "COVERING INDEX runs_kill_requested" in plan


# record_step


async def test_record_step_saves_the_step_and_the_run(store: Store) -> None:
    await store.create_run(run())
    assert await store.request_kill("run-1", T0 + 1)
    checkpoint = await store.add_checkpoint("run-1", 1, {"k": 1})
    # A run read before the checkpoint and the kill: neither may be undone.
    await store.record_step(run(steps=1, tool_calls=1, cost_usd=0.01, updated_at=T0 + 2), step(1))
    assert await store.list_steps("run-1") == [step(1)]
    saved = await stored(store)
    assert (saved.steps, saved.tool_calls, saved.cost_usd, saved.updated_at) == (1, 1, 0.01, T0 + 2)
    assert (saved.kill_requested_at, saved.last_checkpoint_id) == (T0 + 1, checkpoint.id)


async def test_record_step_saves_only_the_totals(store: Store) -> None:
    # A run halted meanwhile stays halted: a step brings figures, not a status.
    await store.create_run(run())
    await store.save_run(run(status=RunStatus.HALTED, halt_reason="killed", updated_at=T0 + 1))
    await store.record_step(run(steps=1, input_tokens=7, updated_at=T0 + 2), step(1))
    saved = await stored(store)
    assert (saved.status, saved.halt_reason) == (RunStatus.HALTED, "killed")
    assert (saved.steps, saved.input_tokens, saved.updated_at) == (1, 7, T0 + 2)


async def test_record_step_with_a_taken_seq_writes_nothing(store: Store) -> None:
    await store.create_run(run())
    await store.record_step(run(steps=1), step(1))
    with pytest.raises(ConstraintError, match=r"record_step 1 of run 'run-1'.*UNIQUE"):
        await store.record_step(run(steps=2, cost_usd=9.0), step(1))
    assert (await stored(store)).steps == 1
    assert (await stored(store)).cost_usd == 0.0
    assert await store.list_steps("run-1") == [step(1)]


async def test_record_step_carries_its_audit_entry_in_the_same_transaction(
    store: Store,
) -> None:
    log = AuditLog(store)
    await store.create_run(run())
    await store.record_step(run(steps=1), step(1), log.seal("step", {"seq": 1}, "run-1"))
    with pytest.raises(ConstraintError):  # a taken seq: neither the step nor its entry
        await store.record_step(run(steps=2), step(1), log.seal("step", {"seq": 1}, "run-1"))
    entries = await store.list_audit()
    assert [(e.seq, e.kind, e.payload) for e in entries] == [(1, "step", {"seq": 1})]
    assert (await log.verify()).ok


async def test_steps_recorded_at_once_share_a_commit_and_fail_alone(store: Store) -> None:
    log = AuditLog(store)
    await store.create_run(run())
    await store.record_step(run(steps=1), step(1), log.seal("step", {"seq": 1}, "run-1"))
    # Recorded together, as concurrent calls do: one batch, in which seq 1 is taken.
    outcomes = await asyncio.gather(
        *(
            store.record_step(run(steps=n), step(seq), log.seal("step", {"seq": seq}, "run-1"))
            for n, seq in ((2, 2), (3, 1), (3, 3), (4, 4))
        ),
        store.record_step(run("ghost"), step(5, "ghost")),
        return_exceptions=True,
    )
    assert outcomes[0] is None and outcomes[2] is None and outcomes[3] is None
    assert isinstance(outcomes[1], ConstraintError)
    assert isinstance(outcomes[4], NotFoundError)
    assert [s.seq for s in await store.list_steps("run-1")] == [1, 2, 3, 4]
    assert (await stored(store)).steps == 4
    entries = await store.list_audit()
    assert [e.payload["seq"] for e in entries] == [1, 2, 3, 4]
    assert (await log.verify()).ok


async def test_a_step_recorded_after_another_write_is_written_after_it(
    store: Store,
) -> None:
    await store.create_run(run())
    first = asyncio.ensure_future(store.record_step(run(steps=1), step(1)))
    saved = asyncio.ensure_future(store.save_run(run(steps=1, status=RunStatus.COMPLETED)))
    second = asyncio.ensure_future(store.record_step(run(steps=2, updated_at=T0 + 9), step(2)))
    await asyncio.gather(first, saved, second)
    final = await stored(store)
    assert (final.status, final.steps, final.updated_at) == (RunStatus.COMPLETED, 2, T0 + 9)


async def test_a_queued_step_is_seen_by_the_next_read_and_a_failure_is_logged(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await store.create_run(run())
    store.queue_step(run(steps=1), step(1))
    assert await store.list_steps("run-1") == [step(1)]  # no await on the write, yet seen
    store.queue_step(run(steps=2), step(1))  # a taken seq: nobody waits, so it is logged
    assert (await stored(store)).steps == 1
    assert "record_step 1 of run 'run-1'" in caplog.text and "UNIQUE" in caplog.text
    with pytest.raises(ConstraintError, match="belongs to run"):
        store.queue_step(run("other"), step(2))


async def test_record_step_of_an_unknown_run_writes_nothing(store: Store) -> None:
    with pytest.raises(NotFoundError, match="record_step: no run 'ghost'"):
        await store.record_step(run("ghost"), step(1, "ghost"))
    assert await store.list_steps("ghost") == []


async def test_record_step_refuses_a_step_of_another_run(store: Store) -> None:
    await store.create_run(run())
    await store.create_run(run("other"))
    with pytest.raises(ConstraintError, match="step 1 belongs to run 'other', not 'run-1'"):
        await store.record_step(run(steps=1), step(1, "other"))
    assert await store.list_steps("other") == []
    assert (await stored(store)).steps == 0


# halt_run


async def test_halt_run_saves_the_run_and_queues_its_packet(store: Store, clock: FakeClock) -> None:
    await store.create_run(run())
    assert await store.request_kill("run-1", T0 + 1)
    final = halted(reason=HaltReason.KILLED, steps=3, time_to_safe_fail_ms=12.5)
    dead = await store.halt_run(final, PACKET)
    assert (dead.run_id, dead.reason, dead.packet, dead.status) == (
        "run-1",
        "killed",
        PACKET,
        "open",
    )
    assert dead.created_at == dead.updated_at == clock.now
    assert await store.get_dead_letter(dead.id) == dead
    assert await store.list_dead_letters() == [dead]
    assert await stored(store) == replace(final, kill_requested_at=T0 + 1)


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (run(halt_reason="timeout"), "got status 'running' and halt_reason 'timeout'"),
        (run(status=RunStatus.COMPLETED), "got status 'completed' and halt_reason None"),
        (run(status=RunStatus.HALTED), "got status 'halted' and halt_reason None"),
    ],
)
async def test_halt_run_needs_a_halted_run_with_a_reason(
    store: Store, record: RunRecord, problem: str
) -> None:
    await store.create_run(run())
    with pytest.raises(ConstraintError, match=rf"halt_run 'run-1': .*{problem}"):
        await store.halt_run(record, PACKET)
    assert await stored(store) == run()
    assert await store.list_dead_letters(status=None) == []


async def test_halt_run_of_an_unknown_run_queues_nothing(store: Store) -> None:
    with pytest.raises(NotFoundError, match="halt_run: no run 'ghost'"):
        await store.halt_run(halted("ghost"), PACKET)
    assert await store.list_dead_letters(status=None) == []


async def test_halt_run_with_a_packet_orjson_cannot_encode_writes_nothing(
    store: Store,
) -> None:
    await store.create_run(run())
    with pytest.raises(TypeError):
        await store.halt_run(halted(), {"handle": object()})
    assert await stored(store) == run()
    assert await store.list_dead_letters(status=None) == []


async def test_halt_run_is_one_transaction(sqlite_store: Store) -> None:
    store = sqlite_store
    await store.create_run(run())
    # Make the dead-letter insert fail after the run was saved in the same transaction.
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "CREATE TRIGGER full_queue BEFORE INSERT ON dead_letters"
            " BEGIN SELECT RAISE(ABORT, 'queue full'); END"
        )
    conn.close()
    with pytest.raises(ConstraintError, match=r"halt_run 'run-1'.*queue full"):
        await store.halt_run(halted(), PACKET)
    assert await stored(store) == run()


# reopen_run


async def test_reopen_run_sets_a_halted_run_running_with_its_topup(store: Store) -> None:
    await store.create_run(run())
    checkpoint = await store.add_checkpoint("run-1", 2, {"notes": ["a"]})
    dead = await store.halt_run(halted(steps=2, time_to_safe_fail_ms=30.0), PACKET)

    reopened = await store.reopen_run("run-1", topup={"usd": 0.25, "steps": 5}, at=T0 + 20)
    assert reopened == await stored(store)
    assert (reopened.status, reopened.halt_reason, reopened.ended_at) == ("running", None, None)
    assert (reopened.time_to_safe_fail_ms, reopened.updated_at) == (None, T0 + 20)
    assert (reopened.steps, reopened.last_checkpoint_id) == (2, checkpoint.id)
    assert reopened.topup == {"usd": 0.25, "steps": 5}
    assert await store.get_dead_letter(dead.id) == replace(
        dead, status="retried", updated_at=T0 + 20
    )


async def test_topups_add_up_over_retries(store: Store) -> None:
    await store.create_run(run())
    await store.halt_run(halted(), {"n": 1})
    first = await store.reopen_run("run-1", topup={"usd": 0.25, "tokens": 1000}, at=T0 + 10)
    # The resumed run carries its topup, as the runtime's record of it does.
    await store.halt_run(halted(reason=HaltReason.TIMEOUT, topup=first.topup), {"n": 2})
    second = await store.reopen_run(
        "run-1", topup={"usd": 0.5, "wall_clock": 600.0, "tool_calls": 0}, at=T0 + 20
    )
    assert second.topup == {"usd": 0.75, "tokens": 1000, "wall_clock": 600.0, "tool_calls": 0}
    assert [d.status for d in await store.list_dead_letters(status=None)] == ["retried"] * 2


async def test_reopen_without_a_topup_keeps_the_budget(store: Store) -> None:
    await store.create_run(run())
    await store.halt_run(halted(reason=HaltReason.LOOP_REPEAT), PACKET)
    assert (await store.reopen_run("run-1", topup={}, at=T0 + 10)).topup is None


async def test_a_killed_run_can_be_retried_and_killed_again(store: Store) -> None:
    await store.create_run(run())
    assert await store.request_kill("run-1", T0 + 1)
    await store.halt_run(halted(reason=HaltReason.KILLED, time_to_safe_fail_ms=8.0), PACKET)
    reopened = await store.reopen_run("run-1", topup={}, at=T0 + 10)
    assert reopened.kill_requested_at is None
    assert await store.kill_requests() == {}
    assert await store.request_kill("run-1", T0 + 11)
    assert await store.kill_requests() == {"run-1": T0 + 11}


async def test_reopen_run_of_an_unknown_run_is_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError, match="reopen_run: no run 'ghost'"):
        await store.reopen_run("ghost", topup={}, at=T0)


@pytest.mark.parametrize("status", [RunStatus.RUNNING, RunStatus.COMPLETED])
async def test_reopen_run_needs_a_halted_run(store: Store, status: RunStatus) -> None:
    await store.create_run(run(status=status))
    with pytest.raises(ConstraintError, match=rf"run 'run-1' is {status}, not halted"):
        await store.reopen_run("run-1", topup={"usd": 1}, at=T0 + 5)
    assert await stored(store) == run(status=status)


async def test_a_dropped_run_is_not_reopened(store: Store) -> None:
    await store.create_run(run())
    dead = await store.halt_run(halted(), PACKET)
    assert await store.set_dead_letter_status(dead.id, "dropped")
    with pytest.raises(ConstraintError, match="run 'run-1' was dropped from the dead-letter queue"):
        await store.reopen_run("run-1", topup={}, at=T0 + 5)
    assert (await stored(store)).status == RunStatus.HALTED


@pytest.mark.parametrize(
    ("topup", "message"),
    [
        ({"budget": 1.0}, "topup key 'budget' is not one of usd, tokens, tool_calls, steps"),
        ({"usd": -0.1}, "topup 'usd' must be a non-negative number, got -0.1"),
        ({"tokens": math.nan}, "topup 'tokens' must be a non-negative number, got nan"),
        ({"steps": math.inf}, "topup 'steps' must be a non-negative number, got inf"),
        ({"tool_calls": True}, "topup 'tool_calls' must be a non-negative number, got True"),
        ({"wall_clock": "10m"}, "topup 'wall_clock' must be a non-negative number, got '10m'"),
    ],
)
async def test_a_bad_topup_is_refused_before_anything_is_written(
    store: Store, topup: dict[str, Any], message: str
) -> None:
    await store.create_run(run())
    dead = await store.halt_run(halted(), PACKET)
    before = await stored(store)
    with pytest.raises(ValueError, match=message):
        await store.reopen_run("run-1", topup={"usd": 0.1, **topup}, at=T0 + 5)
    assert await stored(store) == before
    assert await store.get_dead_letter(dead.id) == dead


# dead letters by run


async def test_dead_letter_for_run_is_the_newest_whatever_its_status(store: Store) -> None:
    await store.create_run(run())
    await store.create_run(run("other"))
    assert await store.dead_letter_for_run("run-1") is None
    first = await store.halt_run(halted(), {"n": 1})
    await store.reopen_run("run-1", topup={}, at=T0 + 10)
    second = await store.halt_run(halted(reason=HaltReason.TIMEOUT), {"n": 2})
    await store.add_dead_letter("other", "error", {})
    assert await store.dead_letter_for_run("run-1") == second
    assert await store.set_dead_letter_status(second.id, "dropped")
    newest = await store.dead_letter_for_run("run-1")
    assert newest is not None and (newest.id, newest.status) == (second.id, "dropped")
    assert first.id < second.id
    assert await store.dead_letter_for_run("ghost") is None


async def test_set_dead_letter_status_only_if_is_check_and_set(
    store: Store, clock: FakeClock
) -> None:
    await store.create_run(run())
    dead = await store.halt_run(halted(), PACKET)
    clock.advance(5)
    assert await store.set_dead_letter_status(dead.id, "dropped", only_if="open")
    assert not await store.set_dead_letter_status(dead.id, "retried", only_if="open")
    assert await store.get_dead_letter(dead.id) == replace(
        dead, status="dropped", updated_at=clock.now
    )
    assert not await store.set_dead_letter_status(999, "dropped", only_if="open")
