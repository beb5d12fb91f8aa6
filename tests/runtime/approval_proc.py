"""An agent that waits for an approval, run as a subprocess that a test SIGKILLs.

usage: approval_proc.py POLICY JOURNAL

It opens a run of `support` in session "crash", prints the run id, and calls send_email
under the idempotency key "send-1": the example policy makes that wait for a human.
The tool body appends a line to JOURNAL, so the test can count how often it ran.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from corral import Supervisor

EMAIL = {"to": "ada@example.com", "body": "Your refund is on its way."}
KEY = "send-1"


def register(sup: Supervisor, journal: Path) -> None:
    @sup.tool()
    async def send_email(to: str, body: str) -> dict[str, Any]:
        with journal.open("a") as out:
            out.write(f"sent {to}\n")
        return {"sent": True, "to": to}


async def main(policy: str, journal: str) -> None:
    sup = Supervisor.from_policy(policy)
    register(sup, Path(journal))
    run = await sup.run(agent="support", session="crash")
    print(run.id, flush=True)
    await run.tool("send_email", EMAIL, idempotency_key=KEY)
    print("sent", flush=True)
    await run.complete()
    await sup.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
