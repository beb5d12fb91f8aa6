"""Retention's cutoffs (never inside a windowed cap's current window), the periodic purge
that survives a failing store, and `corral serve` starting and stopping it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from corral import Supervisor
from corral.gateway.app import Gateway
from corral.policy import Policy, load_policy
from corral.runtime import retention
from corral.state import Store
from corral.telemetry.audit import AuditLog
from tests import support

DAY = 86400.0
NOW = 1_700_000_000.0 + 5 * 3600  # five hours into a UTC day
TODAY = (NOW // DAY) * DAY


# The example policy's own retention line, which each test replaces with its own.
EXAMPLE_RETENTION = "retention: {steps: 30d, artifacts: 7d, dead_letters: 90d}"


def policy(tmp_path: Path, retention_line: str | None, **edits: str) -> Policy:
    edits[EXAMPLE_RETENTION] = retention_line or ""
    return load_policy(support.example_policy(tmp_path, edits), require_keys=False)


def test_cutoffs_follow_the_policy(tmp_path: Path) -> None:
    kept = policy(tmp_path, "retention: {steps: 30d, artifacts: 7d, dead_letters: 90d}")
    assert retention.cutoffs(kept, NOW) == {
        "steps_before": NOW - 30 * DAY,
        "artifacts_before": NOW - 7 * DAY,
        "dead_letters_before": NOW - 90 * DAY,
        "answers_before": NOW - 600,  # held answers go once no request can replay them
    }
    forever = retention.cutoffs(policy(tmp_path, None), NOW)
    assert forever == {
        "steps_before": None,
        "artifacts_before": None,
        "dead_letters_before": None,
        "answers_before": NOW - 600,
    }


def test_steps_a_windowed_cap_counts_are_kept(tmp_path: Path) -> None:
    # The example's fleet and global caps are per day: an hour's retention keeps today's.
    short = policy(tmp_path, "retention: {steps: 1h}")
    assert retention.windows(short) == [DAY, DAY]
    assert retention.cutoffs(short, NOW)["steps_before"] == TODAY
    weekly = policy(
        tmp_path,
        "retention: {steps: 1h}",
        **{"global: {usd: 1000, per: day}": "global: {usd: 1000, per: week}"},
    )
    assert retention.cutoffs(weekly, NOW)["steps_before"] == (NOW // (7 * DAY)) * 7 * DAY


class Flaky:
    """A store whose first purge fails."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls = 0
        self.thrice = asyncio.Event()

    async def purge(self, **cutoffs: Any) -> dict[str, int]:
        self.calls += 1
        if self.calls == 3:
            self.thrice.set()
        if self.calls == 1:
            raise OSError("disk full")
        return {"steps": 0}


async def test_a_failed_periodic_purge_is_logged_and_tried_again(
    sup: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky(sup.store)
    audit = AuditLog(sup.store)
    task = asyncio.create_task(
        retention.purge_periodically(flaky, audit, lambda: sup.policy.current, every=0.001)  # type: ignore[arg-type]
    )
    with caplog.at_level(logging.ERROR, "corral.retention"):
        await asyncio.wait_for(flaky.thrice.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "retention purge failed" in caplog.text and "disk full" in caplog.text
    # A quiet purge that removed nothing writes no audit entry.
    assert [e.kind for e in await sup.store.list_audit()] == []


async def test_serve_purges_from_startup_until_shutdown(sup: Supervisor) -> None:
    gateway = Gateway(sup)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    await inbox.put({"type": "lifespan.startup"})
    served = asyncio.create_task(gateway._lifespan(inbox.get, send))
    await asyncio.wait_for(started.wait(), 5)
    purger = gateway._purger
    assert purger is not None and not purger.done()
    await inbox.put({"type": "lifespan.shutdown"})
    await served
    assert purger.cancelled()
