"""Retention: drop records older than the policy's `retention` keeps them, and the values
used again exactly once nothing can use them, without losing what a live cap counts.

`corral purge` runs it once; `corral serve` at startup and every PURGE_EVERY_SECONDS. The
cutoffs come from the policy in force at each purge:

- steps (with checkpoints and idempotent results): `retention.steps`, but never inside the
  current window of a fleet or global cap with `per:`, whose counters are rebuilt from the
  steps in that window (Supervisor._seed_counters). Task and session caps count runs'
  totals, which are never purged. The store itself keeps every record of a run that is
  running or has an open dead letter (Store.purge);
- artifacts: `retention.artifacts`; dead letters retried or dropped: `retention.dead_letters`;
- held model answers of gateway requests: once their approvals were all decided more than
  REPLAY_SECONDS ago, when a request sent again is no longer answered from them.

A purge that is not a dry run is audited (`retention.purged`, with its counts and
cutoffs); the periodic one only when it removed something. The audit log itself is never
purged: its entries carry no step content (and are redacted with storage redaction on),
so the chain stays whole and `corral audit verify` passes before and after.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from corral.gates.approval_answer import REPLAY_SECONDS
from corral.gates.budget import WINDOW_SECONDS
from corral.policy import Policy
from corral.state import Store
from corral.telemetry.audit import AuditLog

PURGE_EVERY_SECONDS = 3600.0
log = logging.getLogger("corral.retention")


def cutoffs(policy: Policy, now: float) -> dict[str, float | None]:
    """Store.purge's cutoffs at `now` under `policy` (see the module's docstring)."""
    kept = policy.retention
    steps = None if kept.steps is None else now - kept.steps
    if steps is not None:
        for window in windows(policy):
            steps = min(steps, (now // window) * window)
    return {
        "steps_before": steps,
        "artifacts_before": None if kept.artifacts is None else now - kept.artifacts,
        "dead_letters_before": None if kept.dead_letters is None else now - kept.dead_letters,
        "answers_before": now - REPLAY_SECONDS,
    }


def windows(policy: Policy) -> list[float]:
    """The windows (seconds) of the policy's fleet and global caps that reset with `per`."""
    levels = [policy.global_, *(kind.fleet for kind in policy.agent_types.values())]
    return [WINDOW_SECONDS[level.per] for level in levels if level is not None and level.per]


async def purge(
    store: Store,
    audit: AuditLog,
    policy: Policy,
    *,
    now: float,
    dry_run: bool = False,
    quiet: bool = False,
) -> dict[str, int]:
    """Purge once: the rows removed per table (with `dry_run`, that would be). `quiet`: a
    purge that removed nothing is not audited (the periodic one, which would otherwise
    log an entry an hour for nothing)."""
    before = cutoffs(policy, now)
    counts = await store.purge(
        steps_before=before["steps_before"],
        artifacts_before=before["artifacts_before"],
        dead_letters_before=before["dead_letters_before"],
        answers_before=before["answers_before"],
        dry_run=dry_run,
    )
    if not dry_run and (any(counts.values()) or not quiet):
        await audit.append("retention.purged", {"counts": counts, "before": before})
    return counts


async def purge_periodically(
    store: Store,
    audit: AuditLog,
    policy: Callable[[], Policy],
    *,
    clock: Callable[[], float] = time.time,
    every: float = PURGE_EVERY_SECONDS,
) -> None:
    """Purge now and then every `every` seconds, until cancelled. A failed purge is logged
    and tried again next time: it must never take the server down."""
    while True:
        try:
            counts = await purge(store, audit, policy(), now=clock(), quiet=True)
        except Exception:
            log.exception("retention purge failed; trying again in %gs", every)
        else:
            if any(counts.values()):
                log.info("retention purge removed %s", counts)
        await asyncio.sleep(every)
