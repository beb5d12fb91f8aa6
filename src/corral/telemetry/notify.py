"""Approval requests posted to webhooks (JSON with a Slack-compatible `text`), in the
background.

A notification is a courtesy on top of the approval, never part of it: the approval is in
the store before it is posted, posting never blocks the call that waits, and a webhook
that is down costs only the message (`corral approvals ls` still lists the approval).
Each post is retried with exponential backoff and its outcome audited: approval.notified,
or approval.notify_failed once every attempt failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

from corral.policy_approvals import ApprovalsNotify
from corral.telemetry.audit import AuditLog

log = logging.getLogger("corral")

# How long close() lets posts in flight finish before it cancels them.
CLOSE_SECONDS = 3.0
# How much of a call's arguments the one-line `text` shows.
ARGS_CHARS = 120
_JSON_HEADERS = {"Content-Type": "application/json"}


def approval_message(
    panel: Mapping[str, Any], approval_id: str, timeout_at: float, *, escalated: bool = False
) -> dict[str, Any]:
    """What is posted for an approval: the reviewer's panel, the approval's id and
    deadline, and one line of `text` for chat webhooks that show only that."""
    return {
        **panel,
        "id": approval_id,
        "timeout_at": timeout_at,
        "escalated": escalated,
        "text": _text(panel, approval_id, escalated),
    }


def _text(panel: Mapping[str, Any], approval_id: str, escalated: bool) -> str:
    rule = panel.get("rule")
    source = rule.get("source") if isinstance(rule, Mapping) else None
    line = (
        f"{'Escalated: approval' if escalated else 'Approval'} {approval_id}:"
        f" agent {panel.get('agent') or 'unknown'} wants"
        f" {panel.get('tool') or 'a tool'}({_short_args(panel.get('args'))})"
        f" — rule {source or 'unknown'}; reply with `corral approvals approve {approval_id}`"
        f" or `corral approvals reject {approval_id} --feedback ...`"
    )
    return " ".join(line.split())  # one line, whatever the names hold


def _short_args(args: Any) -> str:
    """to="ada@example.com", body="Hi" — JSON values, so a newline in one stays escaped."""
    if isinstance(args, Mapping):
        shown = ", ".join(f"{name}={_json(value)}" for name, value in args.items())
    else:
        shown = "" if args is None else _json(args)
    return shown if len(shown) <= ARGS_CHARS else shown[: ARGS_CHARS - 1] + "…"


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _shown_url(url: str) -> str:
    """The URL as the audit log names it: scheme and host only. Webhook URLs carry their
    secret in the path (Slack's do), and the audit log can never drop what it holds."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], "", "", ""))


class Notifier:
    """Posts approval messages to `settings.webhook` (or a URL given per post), each in a
    task of its own. `sleep` waits between attempts (tests pass one that does not)."""

    def __init__(
        self,
        settings: ApprovalsNotify,
        audit: AuditLog,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._audit = audit
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def post(
        self,
        payload: Mapping[str, Any],
        *,
        url: str | None = None,
        run_id: str | None = None,
        settings: ApprovalsNotify | None = None,
    ) -> None:
        """Start posting `payload` to `url`, else to the webhook; nothing without either.
        `settings` are those of the policy in force (default: the ones given at start), so
        a reload's webhook, attempts and timeouts apply. Returns at once: the outcome goes
        to the audit log."""
        settings = self._settings if settings is None else settings
        target = url if url is not None else settings.webhook
        if target is None:
            return
        body = orjson.dumps(payload, default=str)  # now: the caller may change its dict later
        task = asyncio.get_running_loop().create_task(
            self._deliver(target, body, payload.get("id"), run_id, settings),
            name="corral-approval-notify",
        )
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    async def drain(self) -> None:
        """Wait until every post in flight, and any started meanwhile, has finished."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self) -> None:
        """Let posts in flight finish for up to CLOSE_SECONDS, cancel the rest, and close
        the HTTP session."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=CLOSE_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Only the audit append can fail here (the store is gone): the approval is
            # unharmed, but nobody will read that it was or was not posted.
            log.error("approval notification not audited", exc_info=task.exception())

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _deliver(
        self,
        url: str,
        body: bytes,
        approval: Any,
        run_id: str | None,
        settings: ApprovalsNotify,
    ) -> None:
        """Post until a 2xx answer or settings.attempts tries, waiting backoff, then twice
        that, and so on between them; audit how it went."""
        attempts = settings.attempts
        shown = _shown_url(url)
        timeout = aiohttp.ClientTimeout(total=settings.timeout)
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                await self._sleep(settings.backoff * 2 ** (attempt - 2))
            error = await self._attempt(url, body, timeout)
            if error is None:
                payload = {"approval": approval, "url": shown, "attempts": attempt}
                await self._audit.append("approval.notified", payload, run_id)
                return
        failed = {"approval": approval, "url": shown, "attempts": attempts, "error": error}
        await self._audit.append("approval.notify_failed", failed, run_id)

    async def _attempt(self, url: str, body: bytes, limit: aiohttp.ClientTimeout) -> str | None:
        """None if the webhook took the post, else why not: its status or the error."""
        client = self._client()
        try:
            async with client.post(url, data=body, headers=_JSON_HEADERS, timeout=limit) as answer:
                return None if 200 <= answer.status < 300 else f"HTTP {answer.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
