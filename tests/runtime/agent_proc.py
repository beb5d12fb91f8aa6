"""An agent whose tools have side effects, run as a subprocess that a test SIGKILLs.

usage: agent_proc.py POLICY JOURNAL STOP

The agent calls tool_a, checkpoints, then calls tool_b, tool_c and tool_d and
completes. Every tool body appends `start <tool> <key>` and `end <tool> <key>` to
the journal (fsynced, so the lines survive the kill), and the agent appends a line
after each step it takes. STOP is where this process waits to be killed:
"in_tool_c" (inside tool_c's body, between its start and end) or "after_tool_c"
(after tool_c returned, before the agent calls tool_d).

The test resumes the run in its own process with `work`, as an agent would after a
crash: from the checkpoint's state, calling the same tools in the same order.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, cast, get_args

import yaml

from corral import Run, Supervisor

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "corral.yaml"
AGENT = "worker"
TOOLS = ("tool_a", "tool_b", "tool_c", "tool_d")
# Long enough for any test to kill the process first, short enough that an orphan
# (a test process that died before killing it) does not linger.
STALL_SECONDS = 60.0

Stop = Literal["in_tool_c", "after_tool_c"]


def write_policy(directory: Path, base_url: str, tools: Iterable[str]) -> Path:
    """The example policy with its store in `directory`, its sim provider at `base_url`, and
    an agent `worker` (operational, default route) allowed exactly `tools`."""
    policy = yaml.safe_load(EXAMPLE.read_text())
    policy["store"] = f"sqlite:///{directory}/corral.db"
    policy["providers"]["sim"]["base_url"] = base_url
    names = list(tools)
    policy["tools"].update({name: {"scope": "write"} for name in names})
    policy["agents"][AGENT] = {"type": "operational", "route": "default", "tools": names}
    path = directory / "corral.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


class Journal:
    """An append-only log of side effects that survives SIGKILL line by line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, line: str) -> None:
        with self.path.open("a") as journal:
            journal.write(line + "\n")
            journal.flush()
            os.fsync(journal.fileno())

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []


def register_tools(sup: Supervisor, journal: Journal, *, stall_in_tool_c: bool) -> None:
    """Register tool_a..tool_d; each records its body's start and end with the call's key."""

    def make(name: str, stall: bool) -> None:
        # Synchronous, as most side-effecting tools are: the runtime runs it in a thread.
        def body(item: str, idempotency_key: str | None = None) -> dict[str, Any]:
            journal.write(f"start {name} {idempotency_key}")
            if stall:
                time.sleep(STALL_SECONDS)
            journal.write(f"end {name} {idempotency_key}")
            # The pid tells the test which process's body produced a result it gets back.
            return {"tool": name, "item": item, "key": idempotency_key, "pid": os.getpid()}

        sup.tool(name)(body)

    for name in TOOLS:
        make(name, stall_in_tool_c and name == "tool_c")


async def work(run: Run, journal: Journal, stop: Stop | None = None) -> dict[str, Any]:
    """The agent. On a resumed run it starts from the checkpoint's state."""
    if run.state is None:
        journal.write(f"run {run.id}")
        a = await run.tool("tool_a", {"item": "ticket-42"})
        journal.write("returned tool_a")
        await run.checkpoint({"a": a})
        journal.write("checkpoint")
    else:
        journal.write("resumed")
        a = run.state["a"]
    b = await run.tool("tool_b", {"item": "ticket-42"})
    journal.write("returned tool_b")
    c = await run.tool("tool_c", {"item": "ticket-42"})
    journal.write("returned tool_c")
    if stop == "after_tool_c":
        await asyncio.sleep(STALL_SECONDS)
    d = await run.tool("tool_d", {"item": "ticket-42"})
    journal.write("returned tool_d")
    outcome = {"a": a, "b": b, "c": c, "d": d}
    await run.complete(outcome)
    journal.write("completed")
    return outcome


async def main(policy: Path, journal: Journal, stop: Stop) -> None:
    async with Supervisor.from_policy(policy) as sup:
        register_tools(sup, journal, stall_in_tool_c=stop == "in_tool_c")
        async with sup.run(agent=AGENT, task="crash-resume") as run:
            await work(run, journal, stop)


if __name__ == "__main__":
    stop = sys.argv[3]
    if stop not in get_args(Stop):
        sys.exit(f"STOP must be one of {', '.join(get_args(Stop))}, got {stop!r}")
    asyncio.run(main(Path(sys.argv[1]), Journal(Path(sys.argv[2])), cast(Stop, stop)))
