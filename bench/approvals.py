"""How fast a decision releases a call waiting for it, from another process and from
the same one, in one run.

An SDK run calls send_email (irreversible: the example policy makes it wait for a
human), N times in a row. Each approval is decided

  elsewhere   by another process (a reviewer's CLI, an admin API on another node):
              it writes the decision to the SQLite store; the waiting process sees it
              at its next poll of the store (one query for all its waiting calls)
  here        in the waiting process, through the same review action with the wake hook
              the gateway's admin API passes, which releases the call at once

and the latency is the time from the decision's commit (the decider's clock, right after
the write) to the tool body starting (the waiter's clock; one machine, one clock).
Target: a decision from another process releases the call within 1 s.

Run: .venv/bin/python bench/approvals.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from corral import Supervisor
from corral.aio import loop_factory
from corral.gates.approval_wait import POLL_SECONDS
from corral.runtime import review
from corral.state import SQLiteStore
from corral.telemetry.audit import AuditLog

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "corral.yaml"
CALLS = 30
TARGET_S = 1.0
# The decider: reads approval ids on stdin, approves each, prints the time of the commit.
DECIDER = """
import asyncio, sys, time
from corral.runtime import review
from corral.state import SQLiteStore
from corral.telemetry.audit import AuditLog

async def main(path):
    async with SQLiteStore(path) as store:
        audit = AuditLog(store)
        for line in sys.stdin:
            await review.approve(store, audit, line.strip(), by="bench", now=time.time())
            print(time.time(), flush=True)

asyncio.run(main(sys.argv[1]))
"""


def policy_file(directory: Path) -> Path:
    policy = yaml.safe_load(EXAMPLE.read_text())
    policy["store"] = f"sqlite:///{directory}/corral.db"
    policy["providers"]["sim"]["base_url"] = "http://127.0.0.1:9/v1"  # no model calls
    high = 10**6
    policy["agent_types"]["operational"]["session"] = {"tool_calls": high, "steps": high}
    path = directory / "corral.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


async def next_pending(store: Any, seen: set[str]) -> str:
    while True:
        for approval in await store.list_approvals(status="pending"):
            if approval.id not in seen:
                seen.add(approval.id)
                return approval.id
        await asyncio.sleep(0.001)


async def main() -> None:
    os.environ.setdefault("SIM_API_KEY", "bench")
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        path = policy_file(Path(tmp))
        sup = Supervisor.from_policy(path)
        started: list[float] = []

        @sup.tool()
        async def send_email(to: str, body: str) -> dict[str, str]:
            started.append(time.time())
            return {"status": "sent"}

        decider = await asyncio.create_subprocess_exec(
            sys.executable, "-c", DECIDER, str(Path(tmp) / "corral.db"),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert decider.stdin is not None and decider.stdout is not None
        latencies: dict[str, list[float]] = {"elsewhere": [], "here": []}
        seen: set[str] = set()
        async with sup.run(agent="support", task="bench") as run:
            for n in range(2 * CALLS):
                where = "elsewhere" if n % 2 == 0 else "here"
                sending = asyncio.create_task(
                    run.tool("send_email", {"to": f"c{n}@example.com", "body": "hi"})
                )
                approval = await next_pending(sup.store, seen)
                await asyncio.sleep(POLL_SECONDS * (n % 7) / 7)  # land anywhere in a poll
                if where == "elsewhere":
                    decider.stdin.write(f"{approval}\n".encode())
                    decided = float(await decider.stdout.readline())
                else:
                    await review.approve(
                        sup.store, sup.audit, approval, by="bench", now=time.time(),
                        on_decided=sup.approvals.wake,
                    )  # fmt: skip
                    decided = time.time()
                await sending
                latencies[where].append(started[-1] - decided)
        decider.stdin.close()
        await decider.wait()
        await sup.close()
        async with SQLiteStore(Path(tmp) / "corral.db") as store:
            assert (await AuditLog(store).verify()).ok

    print(f"approval decision -> waiting call released; {CALLS} calls each, poll {POLL_SECONDS}s")
    print(f"{'decided':<10} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
    medians = {}
    for where, values in latencies.items():
        ordered = sorted(values)
        medians[where] = statistics.median(ordered) * 1000
        p95 = ordered[int(0.95 * (len(ordered) - 1))] * 1000
        print(f"{where:<10} {medians[where]:>10.1f} {p95:>8.1f} {ordered[-1] * 1000:>8.1f}")
    print(f"elsewhere / here (median): {medians['elsewhere'] / medians['here']:.1f}x")
    worst = max(latencies["elsewhere"])
    verdict = "met" if worst <= TARGET_S else "MISSED"
    print(f"target: released within {TARGET_S:g} s of a decision elsewhere: {verdict} "
          f"(worst {worst * 1000:.0f} ms)")  # fmt: skip


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())
