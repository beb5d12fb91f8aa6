"""Approval notifications: the message, and posts to a real webhook on a loopback port
that answers as told (retried with backoff, given up on after `attempts`, audited)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from corral.policy_approvals import ApprovalsNotify
from corral.state import SQLiteStore
from corral.telemetry.audit import AuditLog
from corral.telemetry.notify import Notifier, approval_message
from tests.runtime.test_review import ARGS, T0, panel

TIMEOUT_AT = T0 + 3600


@dataclass
class Receiver:
    """A webhook that answers each post with the next of `statuses` (then 200)."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    posts: list[dict[str, Any]] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append(orjson.loads(await request.read()))
        self.content_types.append(request.content_type)
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200, text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got = Receiver()
    app = web.Application()
    app.router.add_post("/hook", got.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    got.url = f"http://{host}:{port}/hook"
    yield got
    await runner.cleanup()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "corral.db") as opened:
        yield opened


class Sleeps:
    """Records the waits between attempts instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def notifier(store: SQLiteStore, sleeps: Sleeps, **settings: Any) -> Notifier:
    chosen = ApprovalsNotify(**{"attempts": 3, "backoff": "500ms", "timeout": "2s", **settings})
    return Notifier(chosen, AuditLog(store), sleep=sleeps)


async def audited(store: SQLiteStore) -> list[tuple[str, str | None, dict[str, Any]]]:
    return [(e.kind, e.run_id, dict(e.payload)) for e in await store.list_audit()]


# --- the message --------------------------------------------------------------------


def test_the_message_is_the_panel_with_id_deadline_and_one_line_of_text() -> None:
    shown = panel("send_email", ARGS)
    message = approval_message(shown, "apr_1", TIMEOUT_AT)
    assert {k: v for k, v in message.items() if k not in shown} == {
        "id": "apr_1",
        "timeout_at": TIMEOUT_AT,
        "escalated": False,
        "text": message["text"],
    }
    assert all(message[k] == v for k, v in shown.items())
    assert message["text"] == (
        'Approval apr_1: agent support wants send_email(to="ada@example.com",'
        ' body="Your refund is on its way.") — rule approvals[0]; reply with'
        " `corral approvals approve apr_1` or `corral approvals reject apr_1 --feedback ...`"
    )


def test_the_text_stays_one_line_and_shortens_long_args() -> None:
    args = {"to": "ada@example.com", "body": "line one\nline two\n" + "x" * 500}
    text = approval_message(panel("send_email", args), "apr_2", TIMEOUT_AT, escalated=True)["text"]
    assert "\n" not in text
    assert text.startswith("Escalated: approval apr_2: agent support wants send_email(to=")
    called = text[text.index("(") + 1 : text.index(") — rule")]
    assert len(called) == 120 and called.endswith("…")
    assert "line one\\nline two" in called


def test_a_sparse_panel_still_makes_a_message() -> None:
    message = approval_message({}, "apr_3", TIMEOUT_AT)
    assert message["text"].startswith("Approval apr_3: agent unknown wants a tool() — rule unknown")


# --- posting ----------------------------------------------------------------------


async def test_a_post_delivers_the_message_and_audits_it(
    receiver: Receiver, store: SQLiteStore
) -> None:
    sleeps = Sleeps()
    notify = notifier(store, sleeps, webhook=receiver.url)
    message = approval_message(panel("send_email", ARGS), "apr_1", TIMEOUT_AT)
    notify.post(message, run_id="r1")
    await notify.drain()
    assert receiver.posts == [orjson.loads(orjson.dumps(message))]
    assert receiver.content_types == ["application/json"]
    assert sleeps.waits == []
    assert await audited(store) == [
        (
            "approval.notified",
            "r1",
            {"approval": "apr_1", "url": receiver.url.removesuffix("/hook"), "attempts": 1},
        )
    ]
    await notify.close()


async def test_failed_answers_are_retried_with_backoff_until_one_succeeds(
    receiver: Receiver, store: SQLiteStore
) -> None:
    receiver.statuses = [500, 500]
    sleeps = Sleeps()
    notify = notifier(store, sleeps, webhook=receiver.url)
    notify.post(approval_message({}, "apr_1", TIMEOUT_AT))
    await notify.drain()
    assert len(receiver.posts) == 3
    assert sleeps.waits == [0.5, 1.0]
    assert await audited(store) == [
        (
            "approval.notified",
            None,
            {"approval": "apr_1", "url": receiver.url.removesuffix("/hook"), "attempts": 3},
        )
    ]
    await notify.close()


async def test_a_webhook_that_always_fails_is_given_up_on_and_audited(
    receiver: Receiver, store: SQLiteStore
) -> None:
    receiver.statuses = [500] * 10
    sleeps = Sleeps()
    notify = notifier(store, sleeps, attempts=4)
    # A URL given per post (an escalation's group) wins over the webhook; none is set here.
    # Its credentials, path (a Slack webhook's secret), query stay out of the audit log.
    hook = receiver.url.replace("http://", "http://user:secret@") + "?token=abc"
    notify.post(approval_message({}, "apr_1", TIMEOUT_AT), url=hook, run_id="r1")
    await notify.drain()
    assert len(receiver.posts) == 4
    assert sleeps.waits == [0.5, 1.0, 2.0]
    assert await audited(store) == [
        (
            "approval.notify_failed",
            "r1",
            {
                "approval": "apr_1",
                "url": receiver.url.removesuffix("/hook"),
                "attempts": 4,
                "error": "HTTP 500",
            },
        )
    ]
    await notify.close()


async def test_a_webhook_nobody_listens_on_fails_quietly(store: SQLiteStore) -> None:
    sleeps = Sleeps()
    # Port 9 on loopback: nothing listens there, so every connection is refused.
    notify = notifier(store, sleeps, webhook="http://127.0.0.1:9/hook", attempts=2)
    notify.post(approval_message({}, "apr_1", TIMEOUT_AT))
    await notify.drain()
    [(kind, _, payload)] = await audited(store)
    assert (kind, payload["attempts"], payload["url"]) == (
        "approval.notify_failed",
        2,
        "http://127.0.0.1:9",  # no path: a webhook's secret lives there
    )
    assert payload["error"].startswith("ClientConnectorError")
    await notify.close()


async def test_without_a_url_a_post_does_nothing(store: SQLiteStore) -> None:
    notify = notifier(store, Sleeps())
    notify.post(approval_message({}, "apr_1", TIMEOUT_AT))
    await notify.drain()
    await notify.close()
    assert await store.list_audit() == []


async def test_close_waits_for_posts_in_flight(receiver: Receiver, store: SQLiteStore) -> None:
    notify = notifier(store, Sleeps(), webhook=receiver.url)
    for n in range(3):
        notify.post(approval_message({}, f"apr_{n}", TIMEOUT_AT))
    await notify.close()
    assert sorted(post["id"] for post in receiver.posts) == ["apr_0", "apr_1", "apr_2"]
    assert [kind for kind, _, _ in await audited(store)] == ["approval.notified"] * 3
