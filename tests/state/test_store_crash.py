"""A writer SIGKILLed mid-write leaves a sound file: every transaction whole or absent."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

import corral
from corral.state import SQLiteStore
from tests.state.crash_writer import BATCH, RUN_ID

WRITER = Path(__file__).with_name("crash_writer.py")
ATTEMPTS = 3


def kill_mid_write(path: Path, mode: str, seed: int) -> None:
    # The writer imports corral from wherever this process found it (installed or src/).
    source = str(Path(corral.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])),
    }
    writer = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert writer.stdout is not None
        started = writer.stdout.readline()
        if started == "writing\n":
            time.sleep(random.Random(seed).uniform(0.02, 0.3))
    finally:
        writer.kill()  # SIGKILL: no handler runs, no cleanup, as in an OOM kill or a crash
        _, errors = writer.communicate()
    assert started == "writing\n", f"writer did not start: {errors}"
    assert writer.returncode == -signal.SIGKILL


def integrity(conn: sqlite3.Connection) -> str:
    result: str = conn.execute("PRAGMA integrity_check").fetchone()[0]
    return result


@pytest.mark.parametrize("attempt", range(ATTEMPTS))
async def test_a_killed_batch_is_all_or_nothing(tmp_path: Path, attempt: int) -> None:
    path = tmp_path / "crash.db"
    await asyncio.to_thread(kill_mid_write, path, "steps", attempt)
    with closing(sqlite3.connect(path)) as conn:
        assert integrity(conn) == "ok"
        count, top = conn.execute("SELECT count(*), max(seq) FROM steps").fetchone()
    assert count >= BATCH and count % BATCH == 0 and top == count
    async with SQLiteStore(path) as store:
        assert len(await store.list_steps(RUN_ID, last=1)) == 1


@pytest.mark.parametrize("attempt", range(ATTEMPTS))
async def test_a_killed_checkpoint_leaves_run_and_checkpoint_agreeing(
    tmp_path: Path, attempt: int
) -> None:
    path = tmp_path / "crash.db"
    await asyncio.to_thread(kill_mid_write, path, "checkpoints", attempt)
    with closing(sqlite3.connect(path)) as conn:
        assert integrity(conn) == "ok"
        (pointer,) = conn.execute(
            "SELECT last_checkpoint_id FROM runs WHERE id = ?", (RUN_ID,)
        ).fetchone()
        (newest,) = conn.execute("SELECT max(id) FROM checkpoints").fetchone()
    assert newest is not None and pointer == newest
    async with SQLiteStore(path) as store:
        last = await store.last_checkpoint(RUN_ID)
        assert last is not None and last.id == newest
