"""Approvals across processes: a decision from the CLI releases a waiting SDK call
promptly, and a process killed while it waits loses nothing and runs nothing twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral import Supervisor
from corral.runtime import review
from corral.state import ApprovalRecord, SQLiteStore
from corral.telemetry.audit import AuditLog
from tests import support
from tests.runtime.approval_proc import EMAIL, KEY, register

PROC = Path(__file__).with_name("approval_proc.py")
CORRAL = Path(sys.executable).with_name("corral")
# Generous bounds for a loaded CI machine; the figures themselves are in
# bench/approvals.py.
RELEASE_BOUND = 5.0
START_TIMEOUT = 30.0


@pytest.fixture
def policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No model calls here, so the sim provider points at a closed port."""
    monkeypatch.setenv("SIM_API_KEY", "sim")
    return support.example_policy(tmp_path, {"http://127.0.0.1:4010/v1": "http://127.0.0.1:9/v1"})


async def first_pending(store: SQLiteStore) -> ApprovalRecord:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = await store.list_approvals(status="pending")
        if found:
            return found[0]
        await asyncio.sleep(0.02)
    raise AssertionError("no approval was requested")


async def test_an_approval_from_the_cli_releases_a_waiting_call_promptly(
    policy: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    sup = Supervisor.from_policy(policy)
    register(sup, journal)
    released_at: list[float] = []
    async with sup.run(agent="support") as run:

        async def send() -> None:
            await run.tool("send_email", EMAIL)
            released_at.append(time.monotonic())

        sending = asyncio.create_task(send())
        approval = await first_pending(sup.store)  # type: ignore[arg-type]
        cli = await asyncio.create_subprocess_exec(
            str(CORRAL), "approvals", "approve", approval.id, "--by", "carol",
            "--note", "checked", "--policy", str(policy),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        _, err = await cli.communicate()
        decided_at = time.monotonic()
        assert cli.returncode == 0, err.decode()
        await asyncio.wait_for(sending, RELEASE_BOUND)
    assert released_at[0] - decided_at < RELEASE_BOUND
    assert journal.read_text() == "sent ada@example.com\n"
    stored = await sup.store.get_approval(approval.id)
    assert stored is not None and (stored.decided_by, stored.note) == ("carol", "checked")
    await sup.close()


async def test_a_process_killed_while_it_waits_loses_nothing_and_runs_the_tool_once(
    policy: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    agent = await asyncio.create_subprocess_exec(
        sys.executable, str(PROC), str(policy), str(journal),
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )  # fmt: skip
    try:
        assert agent.stdout is not None
        line = await asyncio.wait_for(agent.stdout.readline(), START_TIMEOUT)
        run_id = line.decode().strip()
        async with SQLiteStore(tmp_path / "corral.db") as store:
            approval = await first_pending(store)
            agent.send_signal(signal.SIGKILL)
            await asyncio.wait_for(agent.wait(), 10)
            # Decided while nobody waits on it.
            await review.approve(store, AuditLog(store), approval.id, by="alice", now=time.time())
    finally:
        if agent.returncode is None:
            agent.kill()
            await agent.wait()
    assert approval.run_id == run_id and not journal.exists()

    sup = Supervisor.from_policy(policy, lease_ttl=0.5)
    register(sup, journal)
    await asyncio.sleep(0.6)  # the dead process's lease runs out
    async with sup.resume(run_id) as run:
        # The same call under the same key finds the approval and its decision.
        assert await run.tool("send_email", EMAIL, idempotency_key=KEY) == {
            "sent": True,
            "to": "ada@example.com",
        }
        # Sent again (a retry after the crash): replayed, not run again.
        assert await run.tool("send_email", EMAIL, idempotency_key=KEY) == {
            "sent": True,
            "to": "ada@example.com",
        }
    assert journal.read_text() == "sent ada@example.com\n"
    approvals = await sup.store.list_approvals()
    assert [a.id for a in approvals] == [approval.id]  # no second request after the restart
    await sup.close()
