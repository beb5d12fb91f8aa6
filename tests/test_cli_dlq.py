"""`corral runs kill` and `corral dlq ls|show|retry|drop` against a real SQLite file."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from corral.calls import HaltReason, RunStatus
from corral.runtime.recovery import HOST
from corral.state import DeadLetterRecord, LeaseRecord, RunRecord, Store
from tests.support import corral, example_policy, flat, on_store

T0 = 1_700_000_000.0
PACKET = {"goal": "refund ticket 42", "agent": "support", "steps": [{"tool": "refund"}]}


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return example_policy(tmp_path)


def run(run_id: str, **changes: Any) -> RunRecord:
    return RunRecord(
        id=run_id, agent="support", agent_type="operational", created_at=T0, updated_at=T0,
        **changes,
    )  # fmt: skip


def halted(run_id: str, reason: str = HaltReason.BUDGET_COST) -> RunRecord:
    return run(run_id, status=RunStatus.HALTED, halt_reason=reason, ended_at=T0 + 5)


async def halt(store: Store, run_id: str, reason: str = HaltReason.BUDGET_COST) -> DeadLetterRecord:
    await store.create_run(run(run_id))
    return await store.halt_run(halted(run_id, reason), PACKET)


async def seed(store: Store) -> None:
    """One run in each state the verbs tell apart."""
    # "live" is served by this (live) process; "orphan" by one that died.
    now = time.time()
    await store.renew_lease(LeaseRecord("me", HOST, os.getpid(), now, now))
    await store.renew_lease(LeaseRecord("dead", HOST, 2**22 + 1, now, now))  # no such pid
    await store.create_run(run("live", owner="me"))
    await store.create_run(run("orphan", owner="dead"))
    await store.create_run(run("done", status=RunStatus.COMPLETED, ended_at=T0 + 5))
    await store.create_run(halted("bare"))  # halted by hand: no dead letter
    await halt(store, "stuck")
    await halt(store, "again", HaltReason.TIMEOUT)
    await store.reopen_run("again", topup={}, at=T0 + 6)
    gone = await halt(store, "gone", HaltReason.LOOP_REPEAT)
    await store.set_dead_letter_status(gone.id, "dropped")


async def snapshot(store: Store) -> tuple[Any, ...]:
    return (
        await store.list_runs(limit=100),
        await store.list_dead_letters(status=None),
        await store.list_audit(),
    )


# runs kill


def test_runs_kill_requests_a_kill_and_audits_it(policy: Path) -> None:
    on_store(policy, seed)
    result = corral(policy, "runs", "kill", "live")
    assert result.exit_code == 0, result.output
    assert result.output == "run live: kill requested; it halts with 'killed' at its next gate\n"

    kills = on_store(policy, lambda s: s.kill_requests())
    assert list(kills) == ["live"]
    entries = on_store(policy, lambda s: s.list_audit())
    assert [(e.kind, e.run_id, e.payload) for e in entries] == [
        ("run.kill_requested", "live", {"requested_at": kills["live"]})
    ]
    assert corral(policy, "audit", "verify").exit_code == 0


def test_runs_kill_of_a_run_whose_process_died_halts_it_at_once(policy: Path) -> None:
    on_store(policy, seed)
    result = corral(policy, "runs", "kill", "orphan")
    assert result.exit_code == 0, result.output
    assert result.output == "run orphan: halted with 'killed'\n"
    orphan = on_store(policy, lambda s: s.get_run("orphan"))
    assert orphan is not None and (orphan.status, orphan.halt_reason) == ("halted", "killed")
    dead = on_store(policy, lambda s: s.dead_letter_for_run("orphan"))
    assert dead is not None and dead.packet["rule"]["rule"] == "kill switch"
    kinds = [e.kind for e in on_store(policy, lambda s: s.list_audit())]
    assert kinds == ["run.kill_requested", "run.recovered", "run.halted"]
    assert corral(policy, "audit", "verify").exit_code == 0


# dlq ls


@pytest.mark.parametrize(
    ("status", "line"),
    [
        ("open", "No open dead letters."),
        ("retried", "No retried dead letters."),
        ("all", "The dead-letter queue is empty."),
    ],
)
def test_dlq_ls_empty_is_a_friendly_line(policy: Path, status: str, line: str) -> None:
    result = corral(policy, "dlq", "ls", "--status", status)
    assert result.exit_code == 0, result.output
    assert result.output == line + "\n"


def test_dlq_ls_lists_open_dead_letters_by_default(policy: Path) -> None:
    on_store(policy, seed)
    result = corral(policy, "dlq", "ls")
    assert result.exit_code == 0, result.output
    assert "stuck" in result.output and "budget.cost" in result.output
    for other in ("again", "gone", "live"):
        assert other not in result.output


def test_dlq_ls_json_by_status(policy: Path) -> None:
    on_store(policy, seed)

    def listed(status: str) -> list[dict[str, Any]]:
        result = corral(policy, "dlq", "ls", "--status", status, "--json")
        assert result.exit_code == 0, result.output
        rows: list[dict[str, Any]] = orjson.loads(result.output)
        return rows

    every = listed("all")
    assert [(d["run_id"], d["reason"], d["status"]) for d in every] == [
        ("stuck", "budget.cost", "open"),
        ("again", "timeout", "retried"),
        ("gone", "loop.repeat", "dropped"),
    ]
    assert set(every[0]) == {"id", "run_id", "reason", "status", "created_at", "updated_at"}
    assert [d["run_id"] for d in listed("open")] == ["stuck"]
    assert [d["run_id"] for d in listed("retried")] == ["again"]
    assert [d["run_id"] for d in listed("dropped")] == ["gone"]


# dlq show


def test_dlq_show_prints_the_newest_dead_letter_and_its_packet(policy: Path) -> None:
    dead = on_store(policy, lambda s: halt(s, "stuck"))
    shown = corral(policy, "dlq", "show", "stuck")
    assert shown.exit_code == 0, shown.output
    assert "budget.cost" in shown.output and "open" in shown.output
    assert '"goal": "refund ticket 42"' in shown.output

    as_json = corral(policy, "dlq", "show", "stuck", "--json")
    assert as_json.exit_code == 0, as_json.output
    record = orjson.loads(as_json.output)
    assert (record["id"], record["packet"], record["status"]) == (dead.id, PACKET, "open")


# dlq retry


def test_dlq_retry_reopens_with_every_topup_and_audits_it(policy: Path) -> None:
    async def seed_with_checkpoint(store: Store) -> tuple[DeadLetterRecord, int]:
        await store.create_run(run("stuck"))
        checkpoint = await store.add_checkpoint("stuck", 3, {"notes": ["a"]})
        stuck = halted("stuck")
        return await store.halt_run(stuck, PACKET), checkpoint.id

    dead, checkpoint = on_store(policy, seed_with_checkpoint)
    result = corral(
        policy, "dlq", "retry", "stuck", "--add-usd", "0.20", "--add-tokens", "5000",
        "--add-tool-calls", "5", "--add-steps", "10", "--add-wall-clock", "10m",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"run stuck reopened from checkpoint {checkpoint} with +0.20 USD, +5000 tokens,"
        " +5 tool calls, +10 steps, +600s wall clock\n"
        "It goes on once it is picked up again:\n"
        '  SDK: sup.resume("stuck") in the agent\'s code continues it\n'
        "  gateway: only a session's next request continues a run; this one has none\n"
    )

    topup = {"usd": 0.2, "tokens": 5000, "tool_calls": 5, "steps": 10, "wall_clock": 600.0}
    reopened = on_store(policy, lambda s: s.get_run("stuck"))
    assert reopened is not None
    assert (reopened.status, reopened.halt_reason, reopened.topup) == ("running", None, topup)
    settled = on_store(policy, lambda s: s.get_dead_letter(dead.id))
    assert settled is not None and settled.status == "retried"
    entries = on_store(policy, lambda s: s.list_audit())
    assert [(e.kind, e.run_id, e.payload) for e in entries] == [
        ("dlq.retry", "stuck", {"topup": topup, "dead_letter": dead.id})
    ]
    verified = corral(policy, "audit", "verify")
    assert verified.exit_code == 0 and "1 entries" in verified.output


def test_a_second_retry_adds_to_the_first(policy: Path) -> None:
    on_store(policy, lambda s: halt(s, "stuck"))
    first = corral(policy, "dlq", "retry", "stuck", "--add-usd", "0.005")
    assert first.exit_code == 0, first.output
    assert "from the start with +0.005 USD\n" in first.output

    async def halt_again(store: Store) -> None:
        # As the runtime does: the resumed run, carrying its topup, halts once more.
        resumed = await store.get_run("stuck")
        assert resumed is not None
        again = replace(resumed, status=RunStatus.HALTED, halt_reason=HaltReason.BUDGET_COST)
        await store.halt_run(again, PACKET)

    on_store(policy, halt_again)
    second = corral(policy, "dlq", "retry", "stuck", "--add-usd", "0.25", "--add-steps", "2")
    assert second.exit_code == 0, second.output
    assert "with +0.25 USD, +2 steps\n" in second.output
    reopened = on_store(policy, lambda s: s.get_run("stuck"))
    assert reopened is not None and reopened.topup == {"usd": 0.255, "steps": 2}
    assert corral(policy, "audit", "verify").exit_code == 0


def test_dlq_retry_without_a_topup(policy: Path) -> None:
    on_store(policy, lambda s: halt(s, "stuck", HaltReason.LOOP_REPEAT))
    result = corral(policy, "dlq", "retry", "stuck")
    assert result.exit_code == 0, result.output
    assert "run stuck reopened from the start with no budget top-up\n" in result.output
    reopened = on_store(policy, lambda s: s.get_run("stuck"))
    assert reopened is not None and (reopened.status, reopened.topup) == ("running", None)


@pytest.mark.parametrize(
    ("changes", "gateway"),
    [
        ({"session": "ticket-42"}, "the next request of session 'ticket-42' continues it"),
        (
            {"oneshot": True},
            "it was one request without X-Corral-Session: no later request continues it",
        ),
    ],
)
def test_dlq_retry_says_how_the_run_goes_on(
    policy: Path, changes: dict[str, Any], gateway: str
) -> None:
    async def seed_run(store: Store) -> None:
        await store.create_run(run("stuck", **changes))
        await store.halt_run(replace(halted("stuck"), **changes), PACKET)

    on_store(policy, seed_run)
    result = corral(policy, "dlq", "retry", "stuck", "--add-usd", "0.2")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "run stuck reopened from the start with +0.20 USD",
        "It goes on once it is picked up again:",
        '  SDK: sup.resume("stuck") in the agent\'s code continues it',
        f"  gateway: {gateway}",
    ]


# dlq drop


def test_dlq_drop_settles_the_open_dead_letter_and_audits_it(policy: Path) -> None:
    dead = on_store(policy, lambda s: halt(s, "stuck"))
    result = corral(policy, "dlq", "drop", "stuck")
    assert result.exit_code == 0, result.output
    assert result.output == f"dropped dead letter {dead.id} of run stuck; the run stays halted\n"
    dropped = on_store(policy, lambda s: s.get_dead_letter(dead.id))
    assert dropped is not None and dropped.status == "dropped"
    still = on_store(policy, lambda s: s.get_run("stuck"))
    assert still is not None and still.status == RunStatus.HALTED
    entries = on_store(policy, lambda s: s.list_audit())
    assert [(e.kind, e.run_id, e.payload) for e in entries] == [
        ("dlq.drop", "stuck", {"dead_letter": dead.id})
    ]
    assert corral(policy, "audit", "verify").exit_code == 0


# bad arguments and wrong states: every verb, exit code and a message naming the problem

MISSING_RUN_ID = "Missing argument 'RUN_ID'"
RETRY = ("dlq", "retry", "stuck")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("runs", "kill"), 2, MISSING_RUN_ID),
        (("dlq", "show"), 2, MISSING_RUN_ID),
        (("dlq", "retry"), 2, MISSING_RUN_ID),
        (("dlq", "drop"), 2, MISSING_RUN_ID),
        (("dlq", "ls", "--status", "lost"), 2, "Invalid value for '--status'"),
        ((*RETRY, "--add-usd", "-0.5"), 2, "'--add-usd': Value error, expected a non-negative"),
        ((*RETRY, "--add-usd", "lots"), 2, "'--add-usd': Value error, expected a non-negative"),
        ((*RETRY, "--add-usd", "nan"), 2, "'--add-usd': Value error, expected a non-negative"),
        ((*RETRY, "--add-tokens", "-5"), 2, "Invalid value for '--add-tokens'"),
        ((*RETRY, "--add-tool-calls", "many"), 2, "Invalid value for '--add-tool-calls'"),
        ((*RETRY, "--add-steps", "1.5"), 2, "Invalid value for '--add-steps'"),
        ((*RETRY, "--add-wall-clock", "10"), 2, "'--add-wall-clock': Value error, expected a dur"),
        ((*RETRY, "--add-wall-clock", "-5m"), 2, "'--add-wall-clock': Value error, expected a"),
        (("runs", "kill", "ghost"), 1, "error: no run 'ghost' in the store"),
        (("runs", "kill", "stuck"), 1, "run 'stuck' is halted, not running"),
        (("runs", "kill", "done"), 1, "run 'done' is completed, not running"),
        (("dlq", "show", "ghost"), 1, "error: no run 'ghost' in the store"),
        (("dlq", "show", "live"), 1, "run 'live' has no dead letter (it is running)"),
        (("dlq", "retry", "ghost"), 1, "error: no run 'ghost' in the store"),
        (("dlq", "retry", "live"), 1, "run 'live' is running, not halted"),
        (("dlq", "retry", "again"), 1, "run 'again' is running, not halted"),
        (("dlq", "retry", "bare"), 1, "run 'bare' is halted but has no dead letter to retry"),
        (("dlq", "retry", "gone"), 1, "run 'gone' was dropped from the dead-letter queue"),
        (("dlq", "drop", "ghost"), 1, "error: no run 'ghost' in the store"),
        (("dlq", "drop", "live"), 1, "run 'live' has no dead letter to drop (it is running)"),
        (("dlq", "drop", "again"), 1, "run 'again' has nothing open to drop: its dead letter"),
        (("dlq", "drop", "gone"), 1, "run 'gone' has nothing open to drop: its dead letter"),
    ],
)
def test_bad_arguments_and_wrong_states_change_nothing(
    policy: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    on_store(policy, seed)
    before = on_store(policy, snapshot)
    result = corral(policy, *args)
    assert result.exit_code == code, result.output
    assert message in flat(result.output)
    assert on_store(policy, snapshot) == before


@pytest.mark.parametrize(("run_id", "status"), [("again", "retried"), ("gone", "dropped")])
def test_drop_names_what_became_of_the_dead_letter(policy: Path, run_id: str, status: str) -> None:
    on_store(policy, seed)
    dead = on_store(policy, lambda s: s.dead_letter_for_run(run_id))
    assert dead is not None
    result = corral(policy, "dlq", "drop", run_id)
    assert result.exit_code == 1
    assert f"its dead letter {dead.id} was already {status}" in flat(result.output)


def test_a_bad_policy_exits_2_for_every_verb(tmp_path: Path) -> None:
    bad = tmp_path / "corral.yaml"
    bad.write_text("version: 1\nretry: {max_delay: 8}\n")
    verbs = [("runs", "kill"), ("dlq", "ls"), ("dlq", "show"), ("dlq", "retry"), ("dlq", "drop")]
    for verb in verbs:
        result = corral(bad, *verb, *([] if verb == ("dlq", "ls") else ["r"]))
        assert result.exit_code == 2, result.output
        assert "retry.max_delay: expected a duration" in result.output
