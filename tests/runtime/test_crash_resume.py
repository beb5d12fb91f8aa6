"""A run whose process is SIGKILLed resumes from its checkpoint without running a tool body twice.

The agent (agent_proc.py) runs in a subprocess; its tools journal the start and end
of their bodies with the call's idempotency key. The test kills the process at a
chosen point, resumes the run in this process with the same agent code, and reads
the journal: a body whose call returned before the crash never starts again, and
a body the crash interrupted runs to its end exactly once, under the same key.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import corral
from corral import RunStatus, Supervisor
from corral.state import RunRecord
from tests.runtime.agent_proc import AGENT, TOOLS, Journal, Stop, register_tools, work, write_policy

AGENT_PROC = Path(__file__).with_name("agent_proc.py")
# How long the subprocess may take to start up and reach the crash point.
REACH_TIMEOUT = 30.0
ITEM = "ticket-42"  # what agent_proc's agent passes every tool


@pytest.fixture
def policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No model calls here, so the sim provider points at a closed port."""
    monkeypatch.setenv("SIM_API_KEY", "sim")
    return write_policy(tmp_path, "http://127.0.0.1:9/v1", TOOLS)


def crash_at(policy: Path, journal: Journal, stop: Stop, marker: str) -> int:
    """Run the agent in a subprocess until a journal line starts with `marker`, then SIGKILL it.

    Returns the subprocess's pid, which its tools put in their results.
    """
    # The agent imports corral from wherever this process found it (installed or src/).
    source = str(Path(corral.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])),
    }
    agent = subprocess.Popen(
        [sys.executable, str(AGENT_PROC), str(policy), str(journal.path), stop],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    reached = False
    try:
        deadline = time.monotonic() + REACH_TIMEOUT
        while not reached and agent.poll() is None and time.monotonic() < deadline:
            reached = any(line.startswith(marker) for line in journal.lines())
            time.sleep(0.01)
    finally:
        agent.kill()  # SIGKILL: no handler, no cleanup, as in an OOM kill or a power cut
        _, errors = agent.communicate()
    assert reached, f"the agent never journaled {marker!r}: {journal.lines()}\n{errors}"
    assert agent.returncode == -signal.SIGKILL, errors
    return agent.pid


async def crash_then_resume(
    policy: Path, journal: Journal, stop: Stop, marker: str
) -> tuple[str, int, dict[str, Any]]:
    """Crash the agent's process at `marker`, then resume its run here with the same agent
    code (and tools that do not stall). Returns the run id, the crashed pid and the outcome."""
    crashed_pid = await asyncio.to_thread(crash_at, policy, journal, stop, marker)
    run_id = journal.lines()[0].removeprefix("run ")
    async with Supervisor.from_policy(policy) as sup:
        register_tools(sup, journal, stall_in_tool_c=False)
        async with sup.resume(run_id) as run:
            outcome = await work(run, journal)
    return run_id, crashed_pid, outcome


async def stored(policy: Path, run_id: str) -> tuple[RunRecord, list[tuple[str, str, str]]]:
    """The run's record and its steps as (tool, status, key), after checking the audit chain."""
    async with Supervisor.from_policy(policy) as sup:
        assert (await sup.audit.verify()).ok
        record = await sup.store.get_run(run_id)
        steps = await sup.store.list_steps(run_id)
    assert record is not None
    return record, [(s.name, s.status, s.idempotency_key or "") for s in steps]


def keys_of(run_id: str) -> dict[str, str]:
    """The keys the runtime gives the agent's tool calls: the run id and the call's number."""
    return {name: f"{run_id}:{n}" for n, name in enumerate(TOOLS, start=1)}


def result(tool: str, key: str, pid: int) -> dict[str, Any]:
    return {"tool": tool, "item": ITEM, "key": key, "pid": pid}


async def test_a_tool_killed_mid_body_runs_once_more_and_earlier_tools_replay(
    policy: Path, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal.txt")
    run_id, crashed, outcome = await crash_then_resume(policy, journal, "in_tool_c", "start tool_c")
    key = keys_of(run_id)

    assert journal.lines() == [
        f"run {run_id}",
        f"start tool_a {key['tool_a']}",
        f"end tool_a {key['tool_a']}",
        "returned tool_a",
        "checkpoint",
        f"start tool_b {key['tool_b']}",
        f"end tool_b {key['tool_b']}",
        "returned tool_b",
        f"start tool_c {key['tool_c']}",
        # SIGKILL inside tool_c's body: its end never came in the first process.
        "resumed",
        "returned tool_b",  # replayed: tool_b's body did not start again
        f"start tool_c {key['tool_c']}",  # the same key: the same call, run to its end once
        f"end tool_c {key['tool_c']}",
        "returned tool_c",
        f"start tool_d {key['tool_d']}",
        f"end tool_d {key['tool_d']}",
        "returned tool_d",
        "completed",
    ]
    # tool_a's result came back in the checkpoint, tool_b's from the crashed process's record.
    assert outcome == {
        "a": result("tool_a", key["tool_a"], crashed),
        "b": result("tool_b", key["tool_b"], crashed),
        "c": result("tool_c", key["tool_c"], os.getpid()),
        "d": result("tool_d", key["tool_d"], os.getpid()),
    }

    record, steps = await stored(policy, run_id)
    assert (record.status, record.agent) == (RunStatus.COMPLETED, AGENT)
    assert record.outcome == outcome
    assert steps == [
        ("tool_a", "ok", key["tool_a"]),
        ("tool_b", "ok", key["tool_b"]),
        # tool_c's first call died with its process: its write-ahead record became an
        # interrupted step on resume, charged as a tool call (its body did start).
        ("tool_c", "interrupted", ""),
        ("tool_b", "replayed", key["tool_b"]),
        ("tool_c", "ok", key["tool_c"]),
        ("tool_d", "ok", key["tool_d"]),
    ]
    # A replay is not another tool call; the interrupted one is, since it began.
    assert record.tool_calls == len(TOOLS) + 1


async def test_tools_that_returned_before_the_crash_replay_after_it(
    policy: Path, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal.txt")
    run_id, crashed, outcome = await crash_then_resume(
        policy, journal, "after_tool_c", "returned tool_c"
    )
    key = keys_of(run_id)

    assert journal.lines() == [
        f"run {run_id}",
        f"start tool_a {key['tool_a']}",
        f"end tool_a {key['tool_a']}",
        "returned tool_a",
        "checkpoint",
        f"start tool_b {key['tool_b']}",
        f"end tool_b {key['tool_b']}",
        "returned tool_b",
        f"start tool_c {key['tool_c']}",
        f"end tool_c {key['tool_c']}",
        "returned tool_c",
        # SIGKILL between two calls, with no checkpoint since tool_a.
        "resumed",
        "returned tool_b",
        "returned tool_c",
        f"start tool_d {key['tool_d']}",
        f"end tool_d {key['tool_d']}",
        "returned tool_d",
        "completed",
    ]
    assert outcome == {
        "a": result("tool_a", key["tool_a"], crashed),
        "b": result("tool_b", key["tool_b"], crashed),
        "c": result("tool_c", key["tool_c"], crashed),
        "d": result("tool_d", key["tool_d"], os.getpid()),
    }

    record, steps = await stored(policy, run_id)
    assert record.status is RunStatus.COMPLETED
    assert steps == [
        ("tool_a", "ok", key["tool_a"]),
        ("tool_b", "ok", key["tool_b"]),
        ("tool_c", "ok", key["tool_c"]),
        ("tool_b", "replayed", key["tool_b"]),
        ("tool_c", "replayed", key["tool_c"]),
        ("tool_d", "ok", key["tool_d"]),
    ]
    assert record.tool_calls == len(TOOLS)
