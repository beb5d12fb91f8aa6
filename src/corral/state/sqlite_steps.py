"""The SQLite store's group commit: the steps of calls coming back and the write-ahead
records of calls going out, written in batches by the store's worker thread."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from corral.state.records import AuditEntry
from corral.state.sqlite_tables import (
    _AUDIT,
    _INFLIGHT,
    _SAVE_TOTALS,
    _SET_AUDIT_HEAD,
    _SETTLE_INFLIGHT,
    _STEPS,
)
from corral.state.store import ConstraintError, NotFoundError


def append_audit(
    conn: sqlite3.Connection, seal: Callable[[AuditEntry | None], AuditEntry]
) -> AuditEntry:
    """Seal the next entry on the last one and move the head, inside the caller's transaction."""
    row = conn.execute(f"{_AUDIT.select} ORDER BY pos DESC LIMIT 1").fetchone()
    entry = seal(None if row is None else _AUDIT.from_row(row))
    conn.execute(_AUDIT.insert, _AUDIT.to_row(entry))
    conn.execute(_SET_AUDIT_HEAD, (entry.seq, entry.hash))
    return entry


log = logging.getLogger("corral.store")


@dataclass(slots=True)
class StepWrite:
    """A step (with its run's totals) or a write-ahead record (`begins`): the writes that
    share group commits, since every call makes one of each."""

    totals: dict[str, Any] | None
    step_row: list[Any] | None
    seal: Callable[[AuditEntry | None], AuditEntry] | None
    what: str
    done: asyncio.Future[None] | None  # None for a queued step, which nobody waits on
    settles: str | None = None  # the in-flight record this step ends
    begins: list[Any] | None = None  # an in-flight record's row, for begin_call


def write_batch(conn: sqlite3.Connection, batch: list[StepWrite]) -> None:
    """All steps of a batch in three statements, inside the caller's transaction: the
    steps, their audit entries chained in order, and each run's newest totals (a step
    carries its run's running totals, so the last one of a run is all that counts); the
    write-ahead records first, so one settled in the same batch is there to delete."""
    begins = [write.begins for write in batch if write.begins is not None]
    if begins:
        conn.executemany(_INFLIGHT.insert, begins)
    conn.executemany(_STEPS.insert, [w.step_row for w in batch if w.step_row is not None])
    sealed = [write.seal for write in batch if write.seal is not None]
    if sealed:
        row = conn.execute(f"{_AUDIT.select} ORDER BY pos DESC LIMIT 1").fetchone()
        last = None if row is None else _AUDIT.from_row(row)
        entries: list[AuditEntry] = []
        for seal in sealed:
            last = seal(last)
            entries.append(last)
        conn.executemany(_AUDIT.insert, [_AUDIT.to_row(entry) for entry in entries])
        conn.execute(_SET_AUDIT_HEAD, (entries[-1].seq, entries[-1].hash))
    totals = {write.totals["id"]: write.totals for write in batch if write.totals is not None}
    if conn.executemany(_SAVE_TOTALS, list(totals.values())).rowcount != len(totals):
        raise NotFoundError("a step of the batch names no run")
    settled = [(write.settles,) for write in batch if write.settles is not None]
    if settled and conn.executemany(_SETTLE_INFLIGHT, settled).rowcount != len(settled):
        raise NotFoundError("a step of the batch settles a call already settled")


def write_step(conn: sqlite3.Connection, write: StepWrite) -> BaseException | None:
    """One step of a batch, in a savepoint: its error, or None once it is written."""
    conn.execute("SAVEPOINT step")
    try:
        if write.begins is not None:
            conn.execute(_INFLIGHT.insert, write.begins)
        if write.totals is not None and conn.execute(_SAVE_TOTALS, write.totals).rowcount == 0:
            raise NotFoundError(f"record_step: no run {write.totals['id']!r}")
        if write.step_row is not None:
            conn.execute(_STEPS.insert, write.step_row)
        if write.seal is not None:
            append_audit(conn, write.seal)
        # Exactly once: a call recovery charged already (its process was taken for dead)
        # must not be counted again by its own step.
        if (
            write.settles is not None
            and not conn.execute(_SETTLE_INFLIGHT, (write.settles,)).rowcount
        ):
            raise ConstraintError(f"{write.what}: call {write.settles!r} was settled already")
    except Exception as exc:
        conn.execute("ROLLBACK TO step")
        conn.execute("RELEASE step")
        if isinstance(exc, sqlite3.IntegrityError):
            return ConstraintError(f"{write.what}: {exc}")
        return exc
    conn.execute("RELEASE step")
    return None


def settle(batch: list[StepWrite], outcomes: list[BaseException | None]) -> None:
    for write, outcome in zip(batch, outcomes, strict=True):
        if write.done is None:  # queued: nobody waits, so a failure is logged
            if outcome is not None:
                log.error("%s failed: %s", write.what, outcome)
        elif write.done.done():
            continue
        elif outcome is None:
            write.done.set_result(None)
        else:
            write.done.set_exception(outcome)
