"""Approvals and shadow mode in the SDK: a run's tool call waits for a human, and every
rule, timeout action, scope and shadow setting of the policy does what it says."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from corral import Halted, HaltReason, Rejected, RunStatus, Supervisor
from corral.providers.sim import SimProvider
from corral.runtime import review
from corral.runtime.operations import StateConflict
from corral.state import ApprovalRecord

from .conftest import example_policy

EMAIL = {"to": "ada@example.com", "body": "Your refund is on its way."}
RULE_0 = "  - when: 'scope == \"irreversible\"'     # variables"
ON_TIMEOUT_0 = "    on_timeout: cancel                  # cancel"
ON_REJECT_0 = "    on_reject: replan                   # replan"


class Clock:
    """A wall clock the test moves: timeouts pass without waiting for them."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Tools:
    """The example's tools, journaling every body that runs."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []
        self.preview_fails = False

    def register(self, sup: Supervisor) -> None:
        @sup.tool()
        async def get_customer(customer_id: int) -> dict[str, Any]:
            self.ran.append(("get_customer", {"customer_id": customer_id}))
            return {"id": customer_id, "name": "Ada"}

        @sup.tool(shadow=lambda to, body: {"draft": "(shadow)", "to": to})
        async def draft_email(to: str, body: str) -> dict[str, Any]:
            self.ran.append(("draft_email", {"to": to, "body": body}))
            return {"draft": "d-1", "to": to}

        @sup.tool()
        async def send_email(to: str, body: str) -> dict[str, Any]:
            self.ran.append(("send_email", {"to": to, "body": body}))
            return {"sent": True, "to": to}

        def count_rows(statement: str) -> dict[str, int]:
            if self.preview_fails:
                raise ConnectionError("replica unreachable")
            found = re.search(r"rows=(\d+)", statement)
            return {"rows": int(found.group(1)) if found else 0}

        @sup.tool(preview=count_rows)
        def sql_write(statement: str) -> dict[str, Any]:  # a blocking tool
            self.ran.append(("sql_write", {"statement": statement}))
            return {"ok": True}

    def count(self, name: str) -> int:
        return sum(1 for tool, _ in self.ran if tool == name)


Build = Callable[..., Awaitable[tuple[Supervisor, Tools]]]


@pytest.fixture
async def build(
    tmp_path: Path, sim: SimProvider, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Build]:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    made: list[Supervisor] = []

    async def make(
        edits: dict[str, str] | None = None, clock: Callable[[], float] | None = None
    ) -> tuple[Supervisor, Tools]:
        policy = example_policy(tmp_path, sim, edits)
        sup = Supervisor.from_policy(policy, **({"clock": clock} if clock else {}))
        tools = Tools()
        tools.register(sup)
        made.append(sup)
        return sup, tools

    yield make
    for sup in made:
        await sup.close()


async def pending(sup: Supervisor, count: int = 1) -> list[ApprovalRecord]:
    """The pending approvals, once there are `count` of them."""
    for _ in range(500):
        found = await sup.store.list_approvals(status="pending")
        if len(found) >= count:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {count} pending approval(s) appeared")


async def escalated(sup: Supervisor, approval: ApprovalRecord) -> ApprovalRecord:
    """The approval once its waiter has escalated it."""
    for _ in range(500):
        current = await sup.store.get_approval(approval.id)
        assert current is not None
        if current.escalations:
            return current
        await asyncio.sleep(0.01)
    raise AssertionError(f"approval {approval.id} was not escalated")


async def audit_kinds(sup: Supervisor) -> list[str]:
    return [entry.kind for entry in await sup.store.list_audit()]


async def approve(sup: Supervisor, approval: ApprovalRecord, **kw: Any) -> dict[str, Any]:
    by = kw.pop("by", "alice")
    now = kw.pop("now", approval.requested_at + 1)
    return await review.approve(sup.store, sup.audit, approval.id, by=by, now=now, **kw)


async def reject(sup: Supervisor, approval: ApprovalRecord, feedback: str) -> None:
    now = approval.requested_at + 1
    await review.reject(sup.store, sup.audit, approval.id, by="bob", now=now, feedback=feedback)


# --- waiting and deciding -----------------------------------------------------------


async def test_an_irreversible_call_waits_for_a_human_and_runs_once_approved(
    build: Build,
) -> None:
    sup, tools = await build()
    async with sup.run(agent="support", task="refund") as run:
        await run.tool("get_customer", {"customer_id": 42})
        sending = asyncio.create_task(
            run.tool("send_email", EMAIL, reason="the customer asked", expected="one email")
        )
        (approval,) = await pending(sup)
        assert tools.count("send_email") == 0 and not sending.done()
        panel = approval.panel
        assert (approval.tool, approval.args, approval.rule) == (
            "send_email",
            EMAIL,
            "approvals[0]",
        )
        assert panel["reason"] == "the customer asked" and panel["expected"] == "one email"
        assert panel["rollback"] == "send a correction from the support inbox"
        assert panel["rule"] == {"source": "approvals[0]", "when": 'scope == "irreversible"',
                                 "error": None}  # fmt: skip
        assert panel["run"]["steps"] == 1 and panel["run"]["tool_calls"] == 1
        assert [s["name"] for s in panel["last_steps"]] == ["get_customer"]
        assert set(panel["schema"]["properties"]) == {"to", "body"}
        assert panel["on_timeout"] == "cancel" and panel["door"] == "sdk"
        await approve(sup, approval, note="looks right")
        assert await sending == {"sent": True, "to": "ada@example.com"}
    assert tools.count("send_email") == 1
    kinds = await audit_kinds(sup)
    assert kinds.index("approval.requested") < kinds.index("approval.approved")
    stored = await sup.store.get_approval(approval.id)
    assert stored is not None and (stored.status, stored.decided_by) == ("approved", "alice")


async def test_a_rejection_gives_the_agent_the_feedback_and_the_run_goes_on(
    build: Build,
) -> None:
    sup, tools = await build()
    async with sup.run(agent="support") as run:
        sending = asyncio.create_task(run.tool("send_email", EMAIL))
        (approval,) = await pending(sup)
        await reject(sup, approval, "Don't promise a date: say 3-5 business days.")
        with pytest.raises(Rejected) as caught:
            await sending
        assert caught.value.feedback == "Don't promise a date: say 3-5 business days."
        assert caught.value.approval_id == approval.id
        assert run.status is RunStatus.RUNNING  # not a halt: the agent replans
        await run.tool("get_customer", {"customer_id": 1})
    assert tools.count("send_email") == 0
    stored = await sup.store.get_run(run.id)
    assert stored is not None and stored.status is RunStatus.COMPLETED


async def test_on_reject_halt_makes_a_rejection_a_halt(build: Build) -> None:
    sup, tools = await build({ON_REJECT_0: "    on_reject: halt  # replan"})
    async with sup.run(agent="support") as run:
        sending = asyncio.create_task(run.tool("send_email", EMAIL))
        (approval,) = await pending(sup)
        await reject(sup, approval, "wrong customer")
        with pytest.raises(Halted) as caught:
            await sending
    assert caught.value.reason is HaltReason.APPROVAL_REJECTED
    assert "bob rejected 'send_email': wrong customer" in caught.value.message
    assert caught.value.packet["rule"]["feedback"] == "wrong customer"  # type: ignore[index]
    assert await sup.store.dead_letter_for_run(run.id) is not None
    assert tools.count("send_email") == 0


async def test_an_approval_with_edited_arguments_runs_those(build: Build) -> None:
    sup, tools = await build()
    edited = {"to": "ada@example.com", "body": "Your refund arrives in 3-5 business days."}
    async with sup.run(agent="support") as run:
        sending = asyncio.create_task(run.tool("send_email", EMAIL))
        (approval,) = await pending(sup)
        await approve(sup, approval, args=edited)
        await sending
    assert tools.ran == [("send_email", edited)]
    steps = await sup.store.list_steps(run.id)
    # The step shows what ran, as kept for people: redacted (the example redacts storage).
    assert steps[-1].input == {**edited, "to": "[EMAIL_ADDRESS]"}


# --- timeouts --------------------------------------------------------------------


async def test_a_timeout_cancels_the_run(build: Build) -> None:
    clock = Clock()
    sup, tools = await build(clock=clock)
    async with sup.run(agent="support") as run:
        sending = asyncio.create_task(run.tool("send_email", EMAIL))
        (approval,) = await pending(sup)
        clock.advance(3600.5)
        with pytest.raises(Halted) as caught:
            await sending
    assert caught.value.reason is HaltReason.APPROVAL_TIMEOUT
    assert tools.count("send_email") == 0
    stored = await sup.store.get_approval(approval.id)
    assert stored is not None and stored.status == "timeout"
    dead = await sup.store.dead_letter_for_run(run.id)
    assert dead is not None and dead.reason == "approval.timeout"
    with pytest.raises(StateConflict, match="already timed out"):
        await approve(sup, approval, now=clock())


async def test_escalation_gives_a_second_reviewer_a_fresh_timeout(build: Build) -> None:
    clock = Clock()
    sup, tools = await build(
        {ON_TIMEOUT_0: "    on_timeout: escalate\n    escalate_timeout: 30m  # cancel"}, clock
    )
    async with sup.run(agent="support") as run:
        sending = asyncio.create_task(run.tool("send_email", EMAIL))
        (approval,) = await pending(sup)
        clock.advance(3600.5)
        current = await escalated(sup, approval)
        assert current.status == "pending" and current.timeout_at == pytest.approx(clock() + 1800)
        assert not sending.done()
        await approve(sup, current, by="oncall-lead", now=clock())
        await sending
    assert tools.count("send_email") == 1
    assert "approval.escalated" in await audit_kinds(sup)
    assert run.status is RunStatus.COMPLETED


async def test_an_escalation_nobody_answers_halts_into_the_dead_letter_queue(
    build: Build,
) -> None:
    clock = Clock()
    sup, tools = await build(
        {ON_TIMEOUT_0: "    on_timeout: escalate\n    escalate_timeout: 30m  # cancel"}, clock
    )
    async with sup.run(agent="support") as run:
        sending = asyncio.create_task(run.tool("send_email", EMAIL))
        (approval,) = await pending(sup)
        clock.advance(3600.5)
        await escalated(sup, approval)
        clock.advance(1800.5)
        with pytest.raises(Halted) as caught:
            await sending
    assert caught.value.reason is HaltReason.APPROVAL_TIMEOUT
    assert "(after escalation)" in caught.value.message
    assert (await sup.store.dead_letter_for_run(run.id)) is not None
    assert tools.count("send_email") == 0


async def test_a_fallback_tool_runs_with_the_same_arguments_on_timeout(build: Build) -> None:
    clock = Clock()
    sup, tools = await build(
        {ON_TIMEOUT_0: "    on_timeout: fallback\n    fallback_tool: draft_email  # cancel"}, clock
    )
    async with sup.run(agent="support") as run:
        sending = asyncio.create_task(run.tool("send_email", EMAIL))
        await pending(sup)
        clock.advance(3600.5)
        assert await sending == {"draft": "d-1", "to": "ada@example.com"}
    assert tools.ran == [("draft_email", EMAIL)]
    steps = await sup.store.list_steps(run.id)
    assert steps[-1].name == "draft_email"  # recorded as what ran
    assert "approval.fallback" in await audit_kinds(sup)


async def test_time_waiting_for_a_human_does_not_count_toward_the_wall_clock_cap(
    build: Build,
) -> None:
    clock = Clock()
    sup, tools = await build(clock=clock)  # operational sessions: wall_clock 10m
    async with sup.run(agent="support", session="s-1") as run:
        sending = asyncio.create_task(run.tool("send_email", EMAIL))
        (approval,) = await pending(sup)
        clock.advance(15 * 60)  # past the 10-minute cap, within the approval's hour
        await approve(sup, approval, now=clock())
        await sending
        await run.tool("get_customer", {"customer_id": 1})  # not halted with `timeout`
    assert [tool for tool, _ in tools.ran] == ["send_email", "get_customer"]
    stored = await sup.store.get_run(run.id)
    assert stored is not None and stored.status is RunStatus.COMPLETED
    assert stored.waiting_s == pytest.approx(15 * 60, abs=1)


# --- rules, previews, scopes ---------------------------------------------------------


async def test_a_preview_drives_the_rule(build: Build) -> None:
    sup, tools = await build()
    async with sup.run(agent="support") as run:
        await run.tool("sql_write", {"statement": "UPDATE t SET x = 1 -- rows=1000"})
        assert tools.count("sql_write") == 1  # <= 1000 rows: nobody is asked
        big = asyncio.create_task(run.tool("sql_write", {"statement": "DELETE -- rows=5000"}))
        (approval,) = await pending(sup)
        assert approval.rule == "approvals[1]" and approval.panel["preview"] == {"rows": 5000}
        assert approval.panel["on_timeout"] == "escalate"
        await approve(sup, approval)
        await big
    assert tools.count("sql_write") == 2


async def test_a_failing_preview_blocks_the_call(build: Build) -> None:
    sup, tools = await build()
    tools.preview_fails = True
    async with sup.run(agent="support") as run:
        with pytest.raises(Halted) as caught:
            await run.tool("sql_write", {"statement": "UPDATE t -- rows=3"})
    assert caught.value.reason is HaltReason.POLICY_DENIED
    assert "preview of 'sql_write' failed (ConnectionError: replica unreachable)" in str(
        caught.value
    )
    assert tools.count("sql_write") == 0


async def test_a_rule_that_fails_to_evaluate_asks_a_human(build: Build) -> None:
    sup, tools = await build(
        {"preview.rows > 1000'   # the tool's": "args.rows > 1000'   # the tool's"}
    )
    async with sup.run(agent="support") as run:
        writing = asyncio.create_task(run.tool("sql_write", {"statement": "UPDATE t"}))
        (approval,) = await pending(sup)  # sql_write has no `rows` argument: fail closed
        assert approval.panel["rule"]["error"] is not None
        await approve(sup, approval)
        await writing
    assert tools.count("sql_write") == 1
    requested = [e for e in await sup.store.list_audit() if e.kind == "approval.requested"]
    assert "rule_error" in requested[0].payload


async def test_max_scope_caps_what_an_agent_may_call(build: Build) -> None:
    sup, tools = await build(
        {"    tools: [get_customer, draft_email, send_email, sql_write]     # allowlist":
         "    tools: [get_customer, draft_email, send_email, sql_write]\n    max_scope: write"}
    )  # fmt: skip
    async with sup.run(agent="support") as run:
        await run.tool("draft_email", EMAIL)  # write: allowed
        with pytest.raises(Halted) as caught:
            await run.tool("send_email", EMAIL)
    assert caught.value.reason is HaltReason.POLICY_DENIED
    assert "above the agent's max_scope (write)" in caught.value.message
    assert tools.count("send_email") == 0
    assert not await sup.store.list_approvals()  # refused before anyone is asked


async def test_an_irreversible_call_no_rule_matches_waits_under_approvals_default(
    build: Build,
) -> None:
    sup, tools = await build({RULE_0: "  - when: 'tool == \"nothing\"'  # variables"})
    async with sup.run(agent="support") as run:
        sending = asyncio.create_task(run.tool("send_email", EMAIL))
        (approval,) = await pending(sup)
        assert approval.rule == "approvals_default"
        assert approval.timeout_at - approval.requested_at == pytest.approx(3600)
        assert tools.count("send_email") == 0
        await approve(sup, approval)
        await sending
    assert tools.count("send_email") == 1


async def test_unattended_lets_an_irreversible_tool_run_without_a_human(build: Build) -> None:
    sup, tools = await build(
        {
            RULE_0: "  - when: 'tool == \"nothing\"'  # variables",
            "send_email:   {scope: irreversible,": "send_email:   {scope: irreversible, "
            "unattended: true,",
        }
    )
    async with sup.run(agent="support") as run:
        await run.tool("send_email", EMAIL)
    assert tools.count("send_email") == 1
    assert not await sup.store.list_approvals()


async def test_waiting_holds_no_budget(build: Build) -> None:
    # One tool call a day for the whole fleet: a call waiting for a human must not hold it.
    sup, tools = await build(
        {"fleet:   {usd: 200, per: day}": "fleet:   {usd: 200, tool_calls: 1, per: day}"}
    )
    async with sup.run(agent="support") as waiting, sup.run(agent="support") as other:
        sending = asyncio.create_task(waiting.tool("send_email", EMAIL))
        (approval,) = await pending(sup)
        await other.tool("get_customer", {"customer_id": 1})  # spends the fleet's call
        await approve(sup, approval)
        with pytest.raises(Halted) as caught:
            await sending
    assert caught.value.reason is HaltReason.BUDGET_TOOL_CALLS
    assert tools.ran == [("get_customer", {"customer_id": 1})]


# --- decided once, durable -------------------------------------------------------


async def test_two_reviewers_at_once_one_decides(build: Build) -> None:
    sup, tools = await build()
    async with sup.run(agent="support") as run:
        sending = asyncio.create_task(run.tool("send_email", EMAIL))
        (approval,) = await pending(sup)
        outcomes = await asyncio.gather(
            approve(sup, approval, by="alice"),
            approve(sup, approval, by="bob"),
            return_exceptions=True,
        )
        await sending
    conflicts = [o for o in outcomes if isinstance(o, StateConflict)]
    assert len(conflicts) == 1 and "already approved by" in str(conflicts[0])
    assert tools.count("send_email") == 1


async def test_a_restarted_process_finds_the_approval_and_uses_its_decision(
    build: Build,
) -> None:
    first, tools = await build()
    run = await first.run(agent="support", session="s-9")
    waiting = asyncio.create_task(run.tool("send_email", EMAIL, idempotency_key="send-1"))
    (approval,) = await pending(first)
    waiting.cancel()  # the process goes away while the call waits
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await first.close()
    second, tools = await build()
    await approve(second, approval)  # decided while nobody waits
    async with second.resume(run.id) as resumed:
        assert await resumed.tool("send_email", EMAIL, idempotency_key="send-1") == {
            "sent": True,
            "to": "ada@example.com",
        }
        # Other arguments under the same key are another call: they need their own approval.
        other = asyncio.create_task(
            resumed.tool("send_email", {**EMAIL, "to": "bob@example.com"}, idempotency_key="s2")
        )
        (again,) = await pending(second)
        assert again.id != approval.id
        await reject(second, again, "not Bob")
        with pytest.raises(Rejected):
            await other
    assert tools.count("send_email") == 1
    assert len(await second.store.list_approvals()) == 2


# --- shadow mode ---------------------------------------------------------------------


async def test_shadow_mode_records_writes_instead_of_running_them(build: Build) -> None:
    sup, tools = await build(
        {"    tools: [get_customer, draft_email, send_email, sql_write]     # allowlist":
         "    tools: [get_customer, draft_email, send_email, sql_write]\n    shadow: true"}
    )  # fmt: skip
    async with sup.run(agent="support") as run:
        assert await run.tool("get_customer", {"customer_id": 1}) == {"id": 1, "name": "Ada"}
        drafted = await run.tool("draft_email", EMAIL)
        sent = await run.tool("send_email", EMAIL)  # no approval: nothing is executed
    assert drafted == {"draft": "(shadow)", "to": "ada@example.com"}  # the declared result
    assert sent == {"status": "proposed, not executed", "tool": "send_email"}
    assert tools.ran == [("get_customer", {"customer_id": 1})]
    assert not await sup.store.list_approvals()
    proposals = await sup.store.list_proposals(agent="support")
    assert [(p.tool, p.args, p.scope) for p in proposals] == [
        ("draft_email", EMAIL, "write"),
        ("send_email", EMAIL, "irreversible"),
    ]
    stored = await sup.store.get_run(run.id)
    assert stored is not None and stored.tool_calls == 3  # budgets count them as real calls
    now = proposals[0].proposed_at
    await review.review_proposal(sup.store, sup.audit, proposals[0].id, "agree", by="a", now=now)
    await review.review_proposal(sup.store, sup.audit, proposals[1].id, "disagree", by="a", now=now)
    report = await review.shadow_report(sup.store, agent="support")
    assert [(r["tool"], r["reviewed"], r["agreement"]) for r in report] == [
        ("draft_email", 1, 1.0),
        ("send_email", 1, 0.0),
    ]


async def test_a_tool_in_shadow_mode_is_recorded_for_every_agent(build: Build) -> None:
    sup, tools = await build(
        {"  draft_email:  {scope: write}": "  draft_email:  {scope: write, shadow: true}"}
    )
    async with sup.run(agent="support") as run:
        await run.tool("draft_email", EMAIL)
        await run.tool("get_customer", {"customer_id": 1})
    assert tools.ran == [("get_customer", {"customer_id": 1})]
    assert len(await sup.store.list_proposals()) == 1


# --- notification -------------------------------------------------------------------


async def test_each_request_is_posted_to_the_webhook_and_a_failing_one_loses_nothing(
    build: Build,
) -> None:
    received: list[dict[str, Any]] = []
    failing = True

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=500 if failing else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        sup, tools = await build(
            {
                "# approvals_notify: {webhook:": "approvals_notify: {backoff: 10ms, webhook: "
                f'"{url}"}}  #'
            }
        )
        async with sup.run(agent="support") as run:
            sending = asyncio.create_task(run.tool("send_email", EMAIL, reason="asked"))
            (approval,) = await pending(sup)
            await sup.notifier.drain()
            assert len(received) == 5  # every attempt answered 500: retried, then given up
            message = received[0]
            assert (message["id"], message["tool"], message["args"]) == (
                approval.id,
                "send_email",
                EMAIL,
            )
            assert message["reason"] == "asked" and approval.id in message["text"]
            await approve(sup, approval)  # the approval is there all the same
            await sending
        failed = [e for e in await sup.store.list_audit() if e.kind == "approval.notify_failed"]
        assert len(failed) == 1 and failed[0].payload["approval"] == approval.id
        assert tools.count("send_email") == 1
    finally:
        await runner.cleanup()


# --- the run's real clock, concurrency, and approvals nobody waits on ---------------


async def test_the_wall_clock_stops_while_a_call_waits_for_a_human(build: Build) -> None:
    # The real clock this time: the deadline's timer must not fire during the wait.
    sup, tools = await build({"steps: 40, wall_clock: 10m": "steps: 40, wall_clock: 1s"})
    async with sup.run(agent="support", session="s-real") as run:
        sending = asyncio.create_task(run.tool("send_email", EMAIL))
        (approval,) = await pending(sup)
        await asyncio.sleep(1.3)  # past the run's whole wall clock
        await approve(sup, approval, now=approval.requested_at + 1.3)
        assert await sending == {"sent": True, "to": "ada@example.com"}
    assert tools.count("send_email") == 1
    stored = await sup.store.get_run(run.id)
    assert stored is not None and stored.waiting_s >= 1.2


async def test_calls_waiting_at_once_count_their_wait_once(build: Build) -> None:
    clock = Clock()
    sup, tools = await build(clock=clock)
    async with sup.run(agent="support", session="s-both") as run:
        first = asyncio.create_task(run.tool("send_email", EMAIL))
        second = asyncio.create_task(run.tool("send_email", {**EMAIL, "to": "bob@example.com"}))
        both = await pending(sup, 2)
        clock.advance(600)
        for approval in both:
            await approve(sup, approval, now=clock())
        await asyncio.gather(first, second)
    stored = await sup.store.get_run(run.id)
    assert stored is not None and stored.waiting_s == pytest.approx(600, abs=1)
    assert tools.count("send_email") == 2


async def test_what_runs_is_what_was_approved_even_if_the_caller_changes_its_dict(
    build: Build,
) -> None:
    sup, tools = await build()
    asked = dict(EMAIL)
    async with sup.run(agent="support") as run:
        sending = asyncio.create_task(run.tool("send_email", asked))
        (approval,) = await pending(sup)
        asked["to"] = "everyone@example.com"  # changed while the call waits
        await approve(sup, approval)
        await sending
    assert tools.ran == [("send_email", EMAIL)]


async def test_a_fallback_answers_to_its_own_rules(build: Build) -> None:
    clock = Clock()
    rules = f"{RULE_0}"
    sup, tools = await build(
        {
            ON_TIMEOUT_0: "    on_timeout: fallback\n    fallback_tool: draft_email  # cancel",
            rules: "  - when: 'tool == \"draft_email\"'\n    timeout: 5m\n" + rules,
        },
        clock,
    )
    async with sup.run(agent="support") as run:
        sending = asyncio.create_task(run.tool("send_email", EMAIL))
        (first,) = await pending(sup)
        assert first.tool == "send_email" and first.rule == "approvals[1]"
        clock.advance(3600.5)
        for _ in range(500):  # the fallback asks a human of its own
            waiting = await sup.store.list_approvals(status="pending")
            if waiting and waiting[0].id != first.id:
                break
            await asyncio.sleep(0.01)
        assert [(a.tool, a.rule) for a in waiting] == [("draft_email", "approvals[0]")]
        await approve(sup, waiting[0], now=clock())
        await sending
    assert tools.ran == [("draft_email", EMAIL)]


async def test_a_rule_that_gives_no_bool_asks(build: Build) -> None:
    sup, tools = await build({RULE_0: "  - when: 'args.to'  # variables"})
    async with sup.run(agent="support") as run:
        drafting = asyncio.create_task(run.tool("draft_email", EMAIL))
        (approval,) = await pending(sup)
        assert "not true or false" in approval.panel["rule"]["error"]
        assert tools.count("draft_email") == 0
        await approve(sup, approval)
        await drafting
    assert tools.count("draft_email") == 1


async def test_an_approval_nobody_waits_on_is_settled_by_the_sweep(build: Build) -> None:
    clock = Clock()
    sup, tools = await build(
        {ON_TIMEOUT_0: "    on_timeout: escalate\n    escalate_timeout: 30m  # cancel"}, clock
    )
    run = await sup.run(agent="support")
    waiting = asyncio.create_task(run.tool("send_email", EMAIL))
    (approval,) = await pending(sup)
    waiting.cancel()  # the agent went away
    with pytest.raises(asyncio.CancelledError):
        await waiting
    clock.advance(3600.5)
    assert await sup.approvals.sweep(sup.policy.current) == 1
    escalated = await sup.store.get_approval(approval.id)
    assert escalated is not None and escalated.escalations == 1
    # From the first timeout on, not from the sweep: resumed late, it is due at once.
    assert escalated.timeout_at == pytest.approx(approval.timeout_at + 1800)
    clock.advance(1800.5)
    assert await sup.approvals.sweep(sup.policy.current) == 1
    final = await sup.store.get_approval(approval.id)
    assert final is not None and final.status == "timeout"
    assert tools.count("send_email") == 0


async def test_a_policy_without_a_webhook_posts_nothing(build: Build) -> None:
    # The notifier follows the policy in force: no webhook there, no post anywhere.
    sup, tools = await build()
    async with sup.run(agent="support") as run:
        sending = asyncio.create_task(run.tool("send_email", EMAIL))
        (approval,) = await pending(sup)
        await sup.notifier.drain()
        await approve(sup, approval)
        await sending
    kinds = await audit_kinds(sup)
    assert "approval.notified" not in kinds and "approval.notify_failed" not in kinds
    assert tools.count("send_email") == 1
