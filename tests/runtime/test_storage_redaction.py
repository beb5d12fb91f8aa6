"""What a supervised run leaves on disk with storage redaction on: no raw personal value in
the SQLite file or its WAL, while what Corral uses again (an idempotent replay, a pending
approval's arguments) comes back exact; with redaction off, nothing changes at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from corral import Supervisor
from corral.providers.sim import Script, SimProvider
from corral.runtime import review
from corral.state import ApprovalRecord, SQLiteStore
from corral.state.sealed import DATA_KEY_ENV, DataKeyError, SealedStore

from .conftest import example_policy

EMAIL, CARD, SSN = "ada@example.com", "4111 1111 1111 1111", "536-22-1234"
RAW = (EMAIL, CARD, SSN, "4111111111111111")
CUSTOMER = {"id": 42, "email": EMAIL, "card": CARD, "note": f"SSN on file: {SSN}"}
ASKED = f"I am {EMAIL}; refund my card {CARD}. My SSN is {SSN}."
OUTPUT_PII = "    pii: redact                         # redact | block | flag | off"

Build = Callable[..., Awaitable[Supervisor]]


@pytest.fixture
async def build(
    tmp_path: Path, sim: SimProvider, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Build]:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    sim.set_script("gpt-4o", Script.of(f"Done: I wrote to {EMAIL} about card {CARD}."))
    made: list[Supervisor] = []

    async def make(edits: dict[str, str] | None = None) -> Supervisor:
        sup = Supervisor.from_policy(example_policy(tmp_path, sim, edits))

        @sup.tool()
        async def get_customer(customer_id: int) -> dict[str, Any]:
            return {**CUSTOMER, "id": customer_id}

        @sup.tool()
        async def send_email(to: str, body: str) -> dict[str, Any]:
            return {"sent": True, "to": to}

        made.append(sup)
        return sup

    yield make
    for sup in made:
        await sup.close()


def on_disk(tmp_path: Path) -> bytes:
    """The database file and its WAL, as anyone with the disk reads them."""
    db, wal = tmp_path / "corral.db", tmp_path / "corral.db-wal"
    return db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def raw_values_in(found: bytes) -> list[str]:
    return [value for value in RAW if value.encode() in found]


async def pending(sup: Supervisor) -> ApprovalRecord:
    for _ in range(500):
        found = await sup.store.list_approvals(status="pending")
        if found:
            return found[0]
        await asyncio.sleep(0.01)
    raise AssertionError("no pending approval appeared")


async def a_run_with_personal_data(sup: Supervisor, tmp_path: Path) -> None:
    """Messages, a tool result, an idempotent replay, an approval and a halt carrying PII."""
    async with sup.run(agent="support", task=f"refund for {EMAIL}") as run:
        first = await run.tool("get_customer", {"customer_id": 42}, idempotency_key="cust-42")
        again = await run.tool("get_customer", {"customer_id": 42}, idempotency_key="cust-42")
        assert first == again == CUSTOMER  # the replay is the exact original
        await run.chat("default", [{"role": "user", "content": ASKED}], max_tokens=60)
        email = {"to": EMAIL, "body": f"Refunded card {CARD} (SSN {SSN})."}
        sending = asyncio.create_task(run.tool("send_email", email))
        approval = await pending(sup)
        assert approval.args == email  # the reviewer sees it whole
        assert approval.panel["args"] == email
        if isinstance(sup.store, SealedStore):  # while the approval waits, too
            assert raw_values_in(on_disk(tmp_path)) == []
        await review.approve(
            sup.store, sup.audit, approval.id, by="alice", now=approval.requested_at + 1
        )
        assert await sending == {"sent": True, "to": EMAIL}
    with pytest.raises(ValueError, match="has card"):  # the run halts with `error`
        async with sup.run(agent="support") as failing:
            await failing.tool("get_customer", {"customer_id": 7})
            raise ValueError(f"customer {EMAIL} has card {CARD}")


async def test_nothing_raw_is_kept_and_what_is_used_again_is_exact(
    build: Build, tmp_path: Path
) -> None:
    sup = await build()
    assert isinstance(sup.store, SealedStore)
    await a_run_with_personal_data(sup, tmp_path)
    (halted,) = await sup.store.list_dead_letters()
    assert "[EMAIL_ADDRESS]" in halted.packet["message"]
    steps = [s for r in await sup.store.list_runs() for s in await sup.store.list_steps(r.id)]
    assert any("[CREDIT_CARD]" in str(s.input) for s in steps)
    assert (await sup.audit.verify()).ok
    assert raw_values_in(on_disk(tmp_path)) == []  # before closing, WAL and all
    await sup.close()
    assert raw_values_in(on_disk(tmp_path)) == []


async def test_a_resumed_run_gets_its_state_and_replays_back_exact(build: Build) -> None:
    sup = await build()
    run = await sup.run(agent="support")  # awaited: the run stays open when sup closes
    await run.tool("get_customer", {"customer_id": 42}, idempotency_key="k")
    await run.checkpoint({"customer": CUSTOMER})
    await sup.close()  # as a process that stops: the run waits to be resumed elsewhere
    later = await build()
    async with later.resume(run.id) as resumed:
        assert resumed.state == {"customer": CUSTOMER}
        again = await resumed.tool("get_customer", {"customer_id": 1}, idempotency_key="k")
    assert again == CUSTOMER


async def test_with_redaction_off_nothing_is_sealed_nor_redacted(
    build: Build, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATA_KEY_ENV)  # not needed then
    sup = await build({OUTPUT_PII: '    pii: "off"', "  storage: {pii: redact} ": "  storage: {} "})
    assert isinstance(sup.store, SQLiteStore) and sup.store.redactor is None
    await a_run_with_personal_data(sup, tmp_path)
    assert set(raw_values_in(on_disk(tmp_path))) >= {EMAIL, CARD, SSN}


async def test_a_missing_key_is_an_error_at_start(
    build: Build, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATA_KEY_ENV)
    with pytest.raises(DataKeyError, match=f"{DATA_KEY_ENV} is not set.*corral keys data-key"):
        await build()
    assert not (tmp_path / "corral.db").exists()  # refused before the store was opened
