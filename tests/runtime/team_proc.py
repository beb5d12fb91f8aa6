"""Two agents of one team working one session, run as a subprocess that a test SIGKILLs.

usage: team_proc.py POLICY JOURNAL CALLS

The drafter and the checker take turns asking the model something new, CALLS calls
in all, each in its own run of the session "shared"; then the process journals
"ready" and waits to be killed, its runs still running.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from corral import Supervisor
from tests.runtime.agent_proc import STALL_SECONDS, Journal

SESSION = "shared"


def ask(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Check invoice {n * 7919 % 10007}, please."}]


async def main(policy: Path, journal: Journal, calls: int) -> None:
    sup = Supervisor.from_policy(policy)
    runs = [await sup.run(agent=name, session=SESSION) for name in ("drafter", "checker")]
    for run in runs:
        journal.write(f"run {run.id}")
    for n in range(calls):
        await runs[n % 2].chat("default", ask(n), max_tokens=5)
    journal.write("ready")
    await asyncio.sleep(STALL_SECONDS)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Journal(Path(sys.argv[2])), int(sys.argv[3])))
