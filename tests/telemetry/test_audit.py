"""The audit chain: intact verifies; edit, delete, reorder, insert and truncation are caught."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from corral.state import SQLiteStore
from corral.telemetry.audit import AuditLog, entry_hash

ENTRIES = 6


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[tuple[AuditLog, SQLiteStore]]:
    store = SQLiteStore(tmp_path / "audit.db")
    ticks = iter(range(1000))
    log = AuditLog(store, clock=lambda: 1_700_000_000.0 + next(ticks))
    for n in range(1, ENTRIES + 1):
        await log.append("step", {"seq": n, "usd": 0.01 * n, "tool": "get_customer"}, "run_1")
    yield log, store
    await store.close()


def tamper(store: SQLiteStore, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Edit the file behind the store's back, as an attacker with file access would."""
    with sqlite3.connect(store.path) as conn:
        for sql, params in statements:
            conn.execute(sql, params)


def row(store: SQLiteStore, seq: int) -> tuple[object, ...]:
    with sqlite3.connect(store.path) as conn:
        found = conn.execute(
            "SELECT seq, ts, kind, run_id, payload, prev_hash, hash FROM audit WHERE seq = ?",
            (seq,),
        ).fetchone()
    assert found is not None
    return tuple(found)


async def test_intact_chain_verifies(chain: tuple[AuditLog, SQLiteStore]) -> None:
    log, _ = chain
    result = await log.verify()
    assert result.ok and result.count == ENTRIES and result.reason is None


async def test_entries_link_to_their_predecessor(chain: tuple[AuditLog, SQLiteStore]) -> None:
    _, store = chain
    entries = await store.list_audit()
    assert [e.seq for e in entries] == list(range(1, ENTRIES + 1))
    assert entries[0].prev_hash == ""
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.hash
    assert await store.audit_head() == (ENTRIES, entries[-1].hash)


async def test_empty_log_verifies(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "empty.db")
    result = await AuditLog(store).verify()
    await store.close()
    assert result.ok and result.count == 0


async def test_edit_is_caught(chain: tuple[AuditLog, SQLiteStore]) -> None:
    log, store = chain
    tamper(store, ("UPDATE audit SET payload = ? WHERE seq = 3", ('{"usd":0.0}',)))
    result = await log.verify()
    assert not result.ok and result.broken_at == 3 and result.count == 2
    assert result.reason == "entry 3: content does not match its hash (the entry was edited)"


async def test_edit_with_rehash_breaks_the_next_link(chain: tuple[AuditLog, SQLiteStore]) -> None:
    log, store = chain
    _, ts, kind, run_id, _, prev, _ = row(store, 3)
    forged = {"seq": 3, "usd": 0.0, "tool": "get_customer"}
    digest = entry_hash(3, float(ts), str(kind), str(run_id), forged, str(prev))  # type: ignore[arg-type]
    tamper(
        store,
        ("UPDATE audit SET payload = ?, hash = ? WHERE seq = 3", (orjson.dumps(forged), digest)),
    )
    result = await log.verify()
    assert result.broken_at == 4
    assert result.reason is not None and "link to the previous entry is broken" in result.reason


async def test_delete_is_caught(chain: tuple[AuditLog, SQLiteStore]) -> None:
    log, store = chain
    tamper(store, ("DELETE FROM audit WHERE seq = 3", ()))
    result = await log.verify()
    assert result.broken_at == 3
    assert result.reason == (
        "entry 3: found sequence number 4 where 3 belongs (an entry was deleted, inserted or moved)"
    )


async def test_reorder_is_caught(chain: tuple[AuditLog, SQLiteStore]) -> None:
    log, store = chain
    third, fourth = row(store, 3), row(store, 4)
    update = (
        "UPDATE audit SET seq = ?, ts = ?, kind = ?, run_id = ?, payload = ?, prev_hash = ?,"
        " hash = ? WHERE pos = ?"
    )
    tamper(store, (update, (*fourth, 3)), (update, (*third, 4)))
    result = await log.verify()
    assert result.broken_at == 3
    assert result.reason is not None and "found sequence number 4 where 3 belongs" in result.reason


async def test_insert_is_caught(chain: tuple[AuditLog, SQLiteStore]) -> None:
    log, store = chain
    # A well-forged entry slotted in after entry 2: it links to entry 2 and hashes
    # correctly, so the break shows at the entry after it.
    _, _, _, _, _, _, hash_2 = row(store, 2)
    payload = {"seq": 99, "usd": 0.0, "tool": "refund"}
    digest = entry_hash(3, 1_700_000_001.5, "step", "run_1", payload, str(hash_2))
    tamper(
        store,
        ("UPDATE audit SET pos = pos + 100 WHERE seq >= 3", ()),
        (
            "INSERT INTO audit (pos, seq, ts, kind, run_id, payload, prev_hash, hash)"
            " VALUES (3, 3, ?, 'step', 'run_1', ?, ?, ?)",
            (1_700_000_001.5, orjson.dumps(payload), hash_2, digest),
        ),
    )
    result = await log.verify()
    assert result.broken_at == 4
    assert result.reason is not None and "found sequence number 3 where 4 belongs" in result.reason


async def test_truncated_tail_is_caught_by_the_head(chain: tuple[AuditLog, SQLiteStore]) -> None:
    log, store = chain
    tamper(store, ("DELETE FROM audit WHERE seq = ?", (ENTRIES,)))
    result = await log.verify()
    assert result.broken_at == ENTRIES and result.count == ENTRIES - 1
    assert result.reason == (
        f"entry {ENTRIES}: the chain ends after {ENTRIES - 1} entries but {ENTRIES} were "
        "written (entries were deleted from the end)"
    )


async def test_concurrent_appenders_never_fork_the_chain(tmp_path: Path) -> None:
    import asyncio

    first, second = SQLiteStore(tmp_path / "a.db"), SQLiteStore(tmp_path / "a.db")
    logs = [AuditLog(first), AuditLog(second)]
    await asyncio.gather(*(logs[n % 2].append("event", {"n": n}) for n in range(60)))
    result = await logs[0].verify()
    await first.close()
    await second.close()
    assert result.ok and result.count == 60
