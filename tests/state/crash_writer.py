"""Writes to a store until it is killed: the subject of test_store_crash.py.

usage: crash_writer.py PATH steps|checkpoints

Prints "writing" once the first write has committed, then keeps writing: batches
of BATCH steps (each batch larger than SQLite's page cache, so part of it reaches
the WAL before its commit), or checkpoints that also update the run.
"""

from __future__ import annotations

import asyncio
import itertools
import sys

from corral.state import RunRecord, SQLiteStore, StepRecord

BATCH = 2000
RUN_ID = "crash"


async def write_forever(path: str, mode: str) -> None:
    store = SQLiteStore(path)
    await store.create_run(
        RunRecord(id=RUN_ID, agent="crash", agent_type="crash", created_at=0.0, updated_at=0.0)
    )
    text = "x" * 1200
    for n in itertools.count():
        if mode == "steps":
            await store.add_steps(
                [
                    StepRecord(
                        run_id=RUN_ID,
                        seq=n * BATCH + i + 1,
                        kind="tool",
                        name="echo",
                        input={"text": text},
                        started_at=0.0,
                        ended_at=0.0,
                    )
                    for i in range(BATCH)
                ]
            )
        else:
            await store.add_checkpoint(RUN_ID, n, {"text": text * 100})
        if n == 0:
            print("writing", flush=True)


if __name__ == "__main__":
    asyncio.run(write_forever(sys.argv[1], sys.argv[2]))
