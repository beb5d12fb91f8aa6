"""Waiting for a human: the calls of one process that wait on approvals, released the
moment a decision is seen, whoever made it.

A decision made in this process (the gateway's admin API) wakes its waiters at once
(`wake`). One made elsewhere (the CLI, another node) is seen by one poller that reads
every approval this process waits on in a single query every POLL_SECONDS, so a
thousand waiting calls cost one small read, and a decision reaches its caller within
POLL_SECONDS plus that read.

Timeouts are decided by the waiter that sees them pass, as a check-and-set in the store:
if a reviewer decides in the same instant, exactly one of the two wins and both sides
act on the winner.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from corral.gates.approval_need import need_of
from corral.policy import ApprovalAction
from corral.state import ApprovalRecord, Store, StoreError
from corral.telemetry.audit import AuditLog
from corral.telemetry.notify import Notifier, approval_message

if TYPE_CHECKING:
    from corral.policy import Policy

log = logging.getLogger("corral")

POLL_SECONDS = 0.1
# How often a waiter reads its clock while nothing happens: the clock may be injected
# (tests) and move without any sleep.
CHECK_SECONDS = 0.25


class ApprovalWaiter:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        clock: Callable[[], float] = time.time,
        notifier: Notifier | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self.notifier = notifier
        # Per approval waited on: the future its waiters share, and the state they last
        # saw (status, escalations), to tell a change from the same record read again.
        self._futures: dict[str, asyncio.Future[ApprovalRecord]] = {}
        self._seen: dict[str, tuple[str, int]] = {}
        self._waiters: dict[str, int] = {}
        self._poller: asyncio.Task[None] | None = None
        self._woken = asyncio.Event()

    def wake(self, approval_id: str) -> None:
        """An approval was decided in this process: look at once, not at the next poll."""
        if approval_id in self._futures:
            self._woken.set()

    async def wait(
        self,
        record: ApprovalRecord,
        action: ApprovalAction,
        policy: Policy,
        *,
        hold: float | None = None,
    ) -> ApprovalRecord | None:
        """The approval once decided (a timeout, past any escalation, is a decision too), or
        None if `hold` seconds passed first with it still pending."""
        hold_until = math.inf if hold is None else self._clock() + hold
        while record.status == "pending":
            now = self._clock()
            if now >= record.timeout_at:
                record = await self._expire(record, action, policy, now)
                continue
            if now >= hold_until:
                return None
            record = await self._next(record, min(record.timeout_at, hold_until) - now)
        return record

    async def _next(self, record: ApprovalRecord, left: float) -> ApprovalRecord:
        """The record once it changes, or as it was after a short while (to read the clock)."""
        future = self._futures.get(record.id)
        if future is None or future.done():
            future = self._futures[record.id] = asyncio.get_running_loop().create_future()
            self._seen[record.id] = (record.status, record.escalations)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(
                self._poll(), name="corral-approval-poller", context=contextvars.Context()
            )
        self._waiters[record.id] = self._waiters.get(record.id, 0) + 1
        try:
            return await asyncio.wait_for(asyncio.shield(future), min(left, CHECK_SECONDS))
        except TimeoutError:
            return record
        finally:
            left_waiting = self._waiters.pop(record.id) - 1
            if left_waiting:
                self._waiters[record.id] = left_waiting
            elif not future.done():  # nobody waits on it any more (its callers went away)
                self._futures.pop(record.id, None)
                self._seen.pop(record.id, None)
                future.cancel()

    async def _poll(self) -> None:
        while self._futures:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), POLL_SECONDS)
            self._woken.clear()
            ids = list(self._futures)
            try:
                rows = await self._store.approvals_by_id(ids)
            except StoreError as exc:  # keep polling: a busy store must not strand waiters
                log.warning("approval poller could not read the store: %s", exc)
                continue
            for row in rows:
                if (row.status, row.escalations) == self._seen.get(row.id):
                    continue
                future = self._futures.pop(row.id, None)
                self._seen.pop(row.id, None)
                if future is not None and not future.done():
                    future.set_result(row)

    async def sweep(self, policy: Policy) -> int:
        """Expire (or escalate) the pending approvals past their timeout that no call of
        this process waits on: a client that stopped re-sending, a process that died and
        was not resumed. Their runs halt when they next ask (a resume, a re-send): a halt
        needs the run, and it may live elsewhere. Returns how many were settled."""
        now = self._clock()
        settled = 0
        for record in await self._store.list_approvals(status="pending"):
            if record.timeout_at <= now and record.id not in self._futures:
                await self._expire(record, need_of(record).action, policy, now)
                settled += 1
        return settled

    async def _expire(
        self, record: ApprovalRecord, action: ApprovalAction, policy: Policy, now: float
    ) -> ApprovalRecord:
        """The approval's timeout passed: escalate it once if the rule says so, else decide
        it as timed out. Either is a check-and-set; the record as the store has it after."""
        if action.on_timeout == "escalate" and record.escalations == 0:
            # From the first timeout, not from now: a run resumed long after it waits no
            # fresh hour, and may be past the second timeout at once.
            timeout_at = record.timeout_at + action.second_timeout
            escalated = await self._store.escalate_approval(
                record.id, escalations=0, timeout_at=timeout_at
            )
            if escalated:
                target = action.escalate_to
                await self._audit.append(
                    "approval.escalated",
                    {"id": record.id, "timeout_at": timeout_at, "to": target},
                    record.run_id,
                )
                notify = policy.approvals_notify
                url = notify.webhook if target is None else notify.groups.get(target, target)
                self.notify(record, timeout_at, policy, url=url, escalated=True)
        elif await self._store.decide_approval(record.id, "timeout", by=None, at=now):
            await self._audit.append(
                "approval.timeout",
                {"id": record.id, "on_timeout": action.on_timeout},
                record.run_id,
            )
        fresh = await self._store.get_approval(record.id)
        assert fresh is not None  # approvals are never deleted
        return fresh

    def notify(
        self,
        record: ApprovalRecord,
        timeout_at: float,
        policy: Policy,
        *,
        url: str | None,
        escalated: bool = False,
    ) -> None:
        """Post the approval to `url` in the background (never blocks nor fails it); no URL,
        no post."""
        if self.notifier is None or url is None:
            return
        message = approval_message(record.panel or {}, record.id, timeout_at, escalated=escalated)
        settings = policy.approvals_notify
        self.notifier.post(message, url=url, run_id=record.run_id, settings=settings)
