"""`corral runs kill`, run as another process, halts a run: in a call, between calls, not after.

The run lives in this process, against the simulated provider; the kill command is
the installed console script in a subprocess, so the only path between the two is
the shared SQLite store that the supervisor's kill watcher polls.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Literal

import pytest

from corral import Halted, HaltReason, RunStatus, Supervisor
from corral.providers.sim import Fault, FaultKind, SimProvider
from corral.runtime.run import Run
from tests.runtime.agent_proc import AGENT, write_policy

CORRAL = shutil.which("corral", path=str(Path(sys.executable).parent))
# The requirement: a call in flight halts within this long of the kill command returning.
KILL_BOUND_S = 1.0
# How long the test waits for anything at all before failing instead of hanging.
PATIENCE_S = 10.0
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(autouse=True)
def sim_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_API_KEY", "sim")


async def corral_cli(*args: str) -> tuple[int, str]:
    """Run the `corral` console script in its own process; its exit code and output."""
    assert CORRAL is not None, f"no corral console script next to {sys.executable}"
    process = await asyncio.create_subprocess_exec(
        CORRAL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def kill(run_id: str, policy: Path) -> tuple[int, str]:
    return await corral_cli("runs", "kill", run_id, "--policy", str(policy))


async def until(condition: Callable[[], object]) -> None:
    """Wait until `condition()` holds, polling: the state it reads has no event to wait on."""
    async with asyncio.timeout(PATIENCE_S):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def halt_of(call: Awaitable[Any]) -> tuple[Halted, float]:
    """Await a call that must halt; the Halted and the monotonic time it was raised."""
    try:
        await call
    except Halted as halted:
        return halted, time.monotonic()
    raise AssertionError("the call returned instead of halting")


async def check_killed(sup: Supervisor, run: Run, halted: Halted) -> None:
    """The run is halted `killed` in the store, with its packet queued and on the audit chain."""
    assert (halted.reason, halted.run_id) == (HaltReason.KILLED, run.id)
    packet = halted.packet
    assert packet["reason"] == "killed" and packet["rule"]["rule"] == "kill switch"
    assert packet["time_to_safe_fail_ms"] > 0
    record = await sup.store.get_run(run.id)
    assert record is not None
    assert (record.status, record.halt_reason) == (RunStatus.HALTED, "killed")
    assert record.kill_requested_at == packet["rule"]["requested_at"]
    assert record.time_to_safe_fail_ms == packet["time_to_safe_fail_ms"]
    dead = await sup.store.dead_letter_for_run(run.id)
    assert dead is not None
    assert (dead.reason, dead.status, dead.packet) == ("killed", "open", packet)
    assert (await sup.audit.verify()).ok
    kinds = [entry.kind for entry in await sup.store.list_audit() if entry.run_id == run.id]
    # The kill command's own entry, from the other process, precedes the halt.
    assert kinds.index("run.kill_requested") < kinds.index("run.halted")


@pytest.mark.parametrize("inflight", ["tool", "llm"])
async def test_a_kill_from_another_process_halts_the_call_in_flight(
    tmp_path: Path, inflight: Literal["tool", "llm"]
) -> None:
    entered, cancelled = asyncio.Event(), asyncio.Event()
    async with SimProvider(faults={"gpt-4o": Fault(FaultKind.HANG)}) as sim:
        policy = write_policy(tmp_path, sim.openai_base_url, ["stall"])
        async with Supervisor.from_policy(policy) as sup:

            @sup.tool()
            async def stall() -> None:
                entered.set()
                try:
                    await asyncio.Event().wait()  # only a cancellation ends it
                except asyncio.CancelledError:
                    cancelled.set()
                    raise

            run = await sup.run(agent=AGENT, task="kill-in-flight")
            call: Coroutine[Any, Any, object]
            if inflight == "tool":
                call = run.tool("stall", {})
            else:  # the default route starts with gpt-4o, which hangs
                call = run.chat("default", HELLO, max_tokens=50)
            halting = asyncio.create_task(halt_of(call))
            await until(lambda: entered.is_set() or sim.requests["/v1/chat/completions gpt-4o"])

            code, output = await kill(run.id, policy)
            returned = time.monotonic()
            assert code == 0, output
            async with asyncio.timeout(PATIENCE_S):
                halted, halted_at = await halting

            assert halted_at - returned <= KILL_BOUND_S
            await check_killed(sup, run, halted)
            assert cancelled.is_set() == (inflight == "tool")  # the tool's work was stopped
            steps = await sup.store.list_steps(run.id)
            assert [step.name for step in steps] == ["stall" if inflight == "tool" else "default"]


async def test_a_kill_between_calls_halts_the_next_call_before_the_transport(
    tmp_path: Path,
) -> None:
    async with SimProvider() as sim:
        policy = write_policy(tmp_path, sim.openai_base_url, ())
        async with Supervisor.from_policy(policy) as sup:
            run = await sup.run(agent=AGENT, task="kill-between-calls")
            await run.chat("default", HELLO, max_tokens=50)
            sent = sim.requests.total()

            code, output = await kill(run.id, policy)
            assert code == 0, output
            # Let the watcher see the request first, so the next call starts after the kill
            # rather than being cancelled in flight.
            await until(lambda: run.context.kill_requested_at is not None)
            halted, _ = await halt_of(run.chat("default", HELLO, max_tokens=50))

            assert sim.requests.total() == sent  # the call never reached the provider
            await check_killed(sup, run, halted)
            # Stopped ahead of the record gate: the first call is the only step.
            assert len(await sup.store.list_steps(run.id)) == 1


async def test_killing_a_completed_run_is_refused(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, "http://127.0.0.1:9/v1", ())
    async with Supervisor.from_policy(policy) as sup:
        async with sup.run(agent=AGENT, task="done") as run:
            pass  # a clean exit completes the run

        code, output = await kill(run.id, policy)

        assert code == 1
        assert f"run '{run.id}' is completed, not running" in output
        record = await sup.store.get_run(run.id)
        assert record is not None
        assert (record.status, record.kill_requested_at) == (RunStatus.COMPLETED, None)
        kinds = [entry.kind for entry in await sup.store.list_audit() if entry.run_id == run.id]
        assert "run.kill_requested" not in kinds
