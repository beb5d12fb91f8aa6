"""Human approvals at the gateway, over real HTTP with the real client libraries: the
model's tool calls that need a human are held until one decides, re-sent requests are
answered from the same approval, and reported tool calls must match one approved."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from aiohttp import web

from corral.gates import approval_answer, approval_wait
from corral.providers.sim import Script, SimReply, SimToolCall
from corral.runtime import review
from corral.state import ApprovalRecord
from tests.gateway.conftest import Serve, Served, tool_turn

ARGS = {"to": "customer 42", "subject": "Refund", "body": "Your refund is on its way."}
SAYING = "I will tell the customer their refund is on its way."
SEND = SimToolCall("send_email", ARGS)
SCRIPT = Script.of(SimReply(text=SAYING, tool_calls=(SEND,)), "The customer was told.")
USER = [{"role": "user", "content": "Tell customer 42 their refund is on its way."}]
EMAIL_SCHEMA = {
    "type": "object",
    "properties": {
        "to": {"type": "string"},
        "subject": {"type": "string"},
        "body": {"type": "string"},
    },
    "required": ["to", "body"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": EMAIL_SCHEMA}}
    for name in ("send_email", "draft_email")
]
ANTHROPIC_TOOLS = [
    {"name": name, "description": f"{name} to a customer", "input_schema": EMAIL_SCHEMA}
    for name in ("send_email", "draft_email")
]
CHAT = "/v1/chat/completions"
SIM_CHAT = "/v1/chat/completions gpt-4o"  # how the sim counts the calls of model `smart`
FEEDBACK = "Do not email: call the customer instead"

# Places in examples/corral.yaml the tests edit.
LAST_LINE = (
    "retention: {steps: 30d, artifacts: 7d, dead_letters: 90d}   # corral purge; hourly in serve"
)
RULE_TIMEOUT = "timeout: 1h                         #   run.cost_usd"
ON_TIMEOUT = "on_timeout: cancel                  # cancel | escalate | fallback"
ON_REJECT = "on_reject: replan                   # replan"
SUPPORT_TOOLS = "tools: [get_customer, draft_email, send_email, sql_write]     # allowlist"
NOTIFY = '# approvals_notify: {webhook: "https://hooks.slack.com/services/..."}'


def hold(duration: str) -> dict[str, str]:
    """The gateway holds an answer waiting for a human this long, then answers 429."""
    return {LAST_LINE: f"{LAST_LINE}\ngateway: {{approval_hold: {duration}}}"}


def oai(served: Served, **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{served.url}/v1",
        api_key=served.agent_key,
        max_retries=0,
        default_headers=headers,
    )


def claude(served: Served, **headers: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=served.url, api_key=served.agent_key, max_retries=0, default_headers=headers
    )


async def emailing(serve: Serve, edits: dict[str, str] | None = None) -> Served:
    """A gateway whose model answers the first turn with text and a send_email call."""
    served = await serve(edits or {})
    served.sim.set_script("gpt-4o", SCRIPT)
    return served


async def pending(served: Served, count: int = 1, within: float = 10.0) -> list[ApprovalRecord]:
    """The pending approvals once there are `count` of them, oldest first."""
    store = served.sup.store

    async def look() -> list[ApprovalRecord]:
        # The store offers no event to wait on: a reviewer polls too.
        while len(found := await store.list_approvals(status="pending")) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        return list(found)

    return await asyncio.wait_for(look(), within)


async def approve(served: Served, args: Any = None, after: float = 0.0) -> ApprovalRecord:
    """A reviewer approves the first approval asked for (with `args` if given), at once or
    `after` seconds once it is asked, as the admin API would: waking the waiter."""
    record = (await pending(served))[0]
    await asyncio.sleep(after)
    await review.approve(
        served.sup.store,
        served.sup.audit,
        record.id,
        by="alice",
        now=time.time(),
        args=args,
        on_decided=served.sup.approvals.wake,
    )
    return record


async def reject(served: Served) -> ApprovalRecord:
    record = (await pending(served))[0]
    await review.reject(
        served.sup.store,
        served.sup.audit,
        record.id,
        by="bob",
        now=time.time(),
        feedback=FEEDBACK,
        on_decided=served.sup.approvals.wake,
    )
    return record


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "default", "messages": USER, "tools": TOOLS, **extra}


def refusal(response: httpx.Response) -> dict[str, Any]:
    error = response.json()["error"]
    assert isinstance(error, dict)
    return error


# --- held, then decided ---------------------------------------------------------------


async def test_a_held_answer_goes_out_once_approved(serve: Serve) -> None:
    served = await emailing(serve)
    reviewer = asyncio.create_task(approve(served, after=0.2))
    async with oai(served) as client:
        answer = await client.chat.completions.create(
            model="default",
            messages=USER,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
        )
    record = await reviewer
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == SAYING
    [call] = choice.message.tool_calls or []
    assert call.function.name == "send_email"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == ARGS  # type: ignore[union-attr]
    decided = await served.sup.store.get_approval(record.id)
    assert decided is not None and decided.status == "approved"
    assert (decided.tool, decided.args, decided.call_key) == ("send_email", ARGS, call.id)
    assert decided.panel is not None and decided.panel["reason"] == SAYING
    assert decided.panel["door"] == "gateway"
    assert served.sim.requests[SIM_CHAT] == 1


async def test_past_the_hold_429_then_the_same_request_is_answered_from_the_approval(
    serve: Serve,
) -> None:
    served = await emailing(serve, hold("300ms"))
    async with served.client() as client:
        first = await client.post(CHAT, json=body())
        again = await client.post(CHAT, json=body())
        for held in (first, again):
            assert held.status_code == 429
            assert held.headers["retry-after"] == "5"
            error = refusal(held)
            assert (error["type"], error["code"]) == ("approval_pending", "approval_pending")
        [record] = await pending(served)
        assert record.id in refusal(first)["message"]
        await approve(served)
        answered = await client.post(CHAT, json=body())
    assert answered.status_code == 200
    message = answered.json()["choices"][0]["message"]
    [call] = message["tool_calls"]
    assert call["function"]["name"] == "send_email"
    assert json.loads(call["function"]["arguments"]) == ARGS
    assert call["id"] == record.call_key
    assert served.sim.requests[SIM_CHAT] == 1  # the model was asked once, for all three
    # The one approval served all three requests.
    assert [a.id for a in await served.sup.store.list_approvals()] == [record.id]


async def test_the_openai_client_sees_approval_pending_as_a_rate_limit(serve: Serve) -> None:
    served = await emailing(serve, hold("200ms"))
    async with oai(served) as client:
        with pytest.raises(openai.RateLimitError) as raised:
            await client.chat.completions.create(
                model="default",
                messages=USER,  # type: ignore[arg-type]
                tools=TOOLS,  # type: ignore[arg-type]
            )
    assert raised.value.code == "approval_pending"
    assert raised.value.response.headers["retry-after"] == "5"
    assert raised.value.response.headers["x-corral-run"].startswith("run_")


async def test_a_request_that_differs_is_a_new_call_of_the_model(serve: Serve) -> None:
    served = await emailing(serve, hold("200ms"))
    async with served.client() as client:
        assert (await client.post(CHAT, json=body())).status_code == 429
        assert (await client.post(CHAT, json=body(temperature=0.5))).status_code == 429
    assert served.sim.requests[SIM_CHAT] == 2
    assert len(await pending(served, 2)) == 2


async def test_identical_requests_in_flight_together_share_one_approval(serve: Serve) -> None:
    served = await emailing(serve)
    async with served.client() as client:
        first = asyncio.create_task(client.post(CHAT, json=body()))
        [record] = await pending(served)
        second = asyncio.create_task(client.post(CHAT, json=body()))
        await asyncio.sleep(0.3)  # the second is held on the same approval
        assert not second.done()
        await approve(served)
        answers = [await first, await second]
    for answered in answers:
        [call] = answered.json()["choices"][0]["message"]["tool_calls"]
        assert call["id"] == record.call_key
    assert served.sim.requests[SIM_CHAT] == 1
    assert len(await served.sup.store.list_approvals()) == 1


async def test_a_decided_answer_is_not_replayed_to_a_later_conversation(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(approval_answer, "REPLAY_SECONDS", 0.5)
    served = await emailing(serve, hold("200ms"))
    async with served.client() as client:
        assert (await client.post(CHAT, json=body())).status_code == 429
        first = await approve(served)
        for _ in range(2):  # sent again soon after the decision: answered from it
            assert (await client.post(CHAT, json=body())).status_code == 200
        assert served.sim.requests[SIM_CHAT] == 1
        await asyncio.sleep(0.6)
        # Later, the same opening request (a daily job's, say) is a new question for the
        # model and a new approval, not the old approval's call once more.
        later = await client.post(CHAT, json=body())
        assert later.status_code == 429
        assert served.sim.requests[SIM_CHAT] == 2
        [second] = await pending(served)
        assert second.id != first.id
        again = await client.post(CHAT, json=body())  # and that one holds it from now on
    assert again.status_code == 429 and second.id in refusal(again)["message"]
    assert served.sim.requests[SIM_CHAT] == 2


async def test_a_held_answer_is_checked_against_the_policy_in_force_when_it_goes_out(
    serve: Serve,
) -> None:
    served = await emailing(serve, hold("100ms"))
    async with served.client() as client, served.admin() as admin:
        assert (await client.post(CHAT, json=body())).status_code == 429
        await approve(served)
        # Meanwhile the operator caps the agent at writes: the approved send may not go.
        text = served.policy.read_text()
        served.policy.write_text(
            text.replace(SUPPORT_TOOLS, f"{SUPPORT_TOOLS}\n    max_scope: write")
        )
        assert (await admin.post("/admin/policy/reload")).status_code == 200
        refused = await client.post(CHAT, json=body())
    assert refused.status_code == 403, refused.text
    assert refusal(refused)["code"] == "policy.denied"


async def test_edited_arguments_are_what_the_client_gets(serve: Serve) -> None:
    served = await emailing(serve)
    edited = {**ARGS, "body": "Your refund of 20 EUR is on its way."}
    reviewer = asyncio.create_task(approve(served, args=edited))
    async with oai(served) as client:
        answer = await client.chat.completions.create(
            model="default",
            messages=USER,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
        )
    await reviewer
    [call] = answer.choices[0].message.tool_calls or []
    assert call.function.name == "send_email"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == edited  # type: ignore[union-attr]
    assert answer.choices[0].finish_reason == "tool_calls"


async def test_edited_arguments_reach_a_request_sent_again(serve: Serve) -> None:
    served = await emailing(serve, hold("200ms"))
    edited = {**ARGS, "subject": "Your refund"}
    async with served.client() as client:
        assert (await client.post(CHAT, json=body())).status_code == 429
        await approve(served, args=edited)
        answered = await client.post(CHAT, json=body())
    [call] = answered.json()["choices"][0]["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == edited


# --- decided through the admin API ----------------------------------------------------


async def test_an_admin_api_decision_releases_the_held_request_at_once(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The poller would look only after 30 s: the decision itself must wake the waiter.
    monkeypatch.setattr(approval_wait, "POLL_SECONDS", 30.0)
    served = await emailing(serve)
    edited = {**ARGS, "body": "Refund sent."}
    async with served.client() as client, served.admin() as admin:
        held = asyncio.create_task(client.post(CHAT, json=body()))
        await pending(served)
        listed = (await admin.get("/admin/approvals")).json()["approvals"]
        [shown] = listed
        assert (shown["tool"], shown["args"], shown["status"]) == ("send_email", ARGS, "pending")
        assert "answer" not in shown  # the held answer is the gateway's, not the reviewer's
        decided = await admin.post(
            f"/admin/approvals/{shown['id']}/approve", json={"args": edited, "note": "ok"}
        )
        assert decided.status_code == 200, decided.text
        answered = await asyncio.wait_for(held, 10)
    [call] = answered.json()["choices"][0]["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == edited
    record = await served.sup.store.get_approval(shown["id"])
    assert record is not None and (record.decided_by, record.approved_args) == ("admin", edited)


async def test_edited_arguments_that_do_not_fit_the_declared_schema_are_refused(
    serve: Serve,
) -> None:
    served = await emailing(serve, hold("100ms"))
    async with served.client() as client, served.admin() as admin:
        assert (await client.post(CHAT, json=body())).status_code == 429
        [record] = await pending(served)
        refused = await admin.post(
            f"/admin/approvals/{record.id}/approve", json={"args": {**ARGS, "cc": "everyone"}}
        )
        assert refused.status_code == 400, refused.text
        assert "schema" in refused.text
        still = await client.post(CHAT, json=body())
    assert still.status_code == 429  # nothing was decided


# --- rejected -------------------------------------------------------------------------


async def test_a_rejection_is_text_with_the_feedback_openai_whole(serve: Serve) -> None:
    served = await emailing(serve)
    reviewer = asyncio.create_task(reject(served))
    async with oai(served) as client:
        answer = await client.chat.completions.create(
            model="default",
            messages=USER,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
        )
    await reviewer
    choice = answer.choices[0]
    assert choice.finish_reason == "stop"
    assert not choice.message.tool_calls
    text = choice.message.content or ""
    assert text.startswith(SAYING) and FEEDBACK in text and "send_email" in text


async def test_a_rejection_is_text_with_the_feedback_openai_streamed(serve: Serve) -> None:
    served = await emailing(serve)
    reviewer = asyncio.create_task(reject(served))
    text, calls, finish = "", [], None
    async with oai(served) as client:
        stream = await client.chat.completions.create(
            model="default",
            messages=USER,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            stream=True,
        )
        async for chunk in stream:
            for choice in chunk.choices:
                text += choice.delta.content or ""
                calls += choice.delta.tool_calls or []
                finish = choice.finish_reason or finish
    await reviewer
    assert (calls, finish) == ([], "stop")
    assert text.startswith(SAYING) and FEEDBACK in text
    assert text.count(SAYING) == 1  # the text streamed first is not sent twice


async def test_a_rejection_is_text_with_the_feedback_anthropic_whole_and_streamed(
    serve: Serve,
) -> None:
    served = await emailing(serve)
    async with claude(served) as client:
        reviewer = asyncio.create_task(reject(served))
        message = await client.messages.create(
            model="default",
            max_tokens=300,
            messages=USER,  # type: ignore[arg-type]
            tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
        )
        await reviewer
        assert message.stop_reason == "end_turn"
        assert [block.type for block in message.content] == ["text"]
        whole = message.content[0].text  # type: ignore[union-attr]
        assert whole.startswith(SAYING) and FEEDBACK in whole

        # Streamed: a different body (stream: true), so a new answer and a new approval.
        reviewer = asyncio.create_task(reject(served))  # the one pending now
        async with client.messages.stream(
            model="default",
            max_tokens=300,
            messages=USER,  # type: ignore[arg-type]
            tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
        ) as stream:
            streamed = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
        await reviewer
    assert final.stop_reason == "end_turn"
    assert [block.type for block in final.content] == ["text"]
    assert streamed.startswith(SAYING) and FEEDBACK in streamed
    assert streamed.count(SAYING) == 1
    assert served.sim.requests["/v1/chat/completions gpt-4o"] == 2


async def test_a_rejection_reaches_a_request_sent_again(serve: Serve) -> None:
    served = await emailing(serve, hold("200ms"))
    async with served.client() as client:
        assert (await client.post(CHAT, json=body())).status_code == 429
        await reject(served)
        answered = await client.post(CHAT, json=body())
    choice = answered.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert "tool_calls" not in choice["message"]
    assert FEEDBACK in choice["message"]["content"]
    assert served.sim.requests[SIM_CHAT] == 1


async def test_on_reject_halt_is_a_403_approval_rejected(serve: Serve) -> None:
    served = await emailing(serve, {ON_REJECT: "on_reject: halt                     # replan"})
    reviewer = asyncio.create_task(reject(served))
    async with oai(served) as client:
        with pytest.raises(openai.PermissionDeniedError) as raised:
            await client.chat.completions.create(
                model="default",
                messages=USER,  # type: ignore[arg-type]
                tools=TOOLS,  # type: ignore[arg-type]
            )
    await reviewer
    error = raised.value.body
    assert isinstance(error, dict)
    assert (error["type"], error["code"]) == ("corral_halt", "approval.rejected")
    assert FEEDBACK in error["message"]


# --- timed out and escalated ----------------------------------------------------------


async def test_on_timeout_cancel_is_a_403_approval_timeout_and_a_dead_letter(
    serve: Serve,
) -> None:
    served = await emailing(serve, {RULE_TIMEOUT: "timeout: 200ms  #   run.cost_usd"})
    async with served.client() as client:
        refused = await client.post(CHAT, json=body())
    assert refused.status_code == 403
    error = refusal(refused)
    assert (error["type"], error["code"]) == ("corral_halt", "approval.timeout")
    [record] = await served.sup.store.list_approvals()
    assert record.status == "timeout"
    run_id = refused.headers["x-corral-run"]
    dead = await served.sup.store.dead_letter_for_run(run_id)
    assert dead is not None
    assert served.sim.requests[SIM_CHAT] == 1


async def test_a_timed_out_request_sent_again_is_refused_again_without_the_model(
    serve: Serve,
) -> None:
    served = await emailing(serve, {RULE_TIMEOUT: "timeout: 200ms  #   run.cost_usd"})
    async with served.client() as client:
        for _ in range(2):
            refused = await client.post(CHAT, json=body())
            assert refused.status_code == 403
            assert refusal(refused)["code"] == "approval.timeout"
    assert served.sim.requests[SIM_CHAT] == 1


async def test_on_timeout_fallback_renames_the_call_to_the_fallback_tool(serve: Serve) -> None:
    fallback = "on_timeout: fallback\n    fallback_tool: draft_email"
    edits = {RULE_TIMEOUT: "timeout: 200ms  #   run.cost_usd", ON_TIMEOUT: fallback}
    served = await emailing(serve, edits)
    async with oai(served) as client:
        answer = await client.chat.completions.create(
            model="default",
            messages=USER,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
        )
        [call] = answer.choices[0].message.tool_calls or []
        assert call.function.name == "draft_email"  # type: ignore[union-attr]
        assert json.loads(call.function.arguments) == ARGS  # type: ignore[union-attr]
        assert answer.choices[0].finish_reason == "tool_calls"
        # The agent ran the fallback and reports it: that passes.
        messages = [
            *USER,
            answer.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "drafted"},
        ]
        after = await client.chat.completions.create(
            model="default",
            messages=messages,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
        )
    assert after.choices[0].message.content == "The customer was told."
    [record] = await served.sup.store.list_approvals()
    assert record.status == "timeout"


async def test_a_streamed_fallback_sends_the_fallback_tool(serve: Serve) -> None:
    fallback = "on_timeout: fallback\n    fallback_tool: draft_email"
    edits = {RULE_TIMEOUT: "timeout: 200ms  #   run.cost_usd", ON_TIMEOUT: fallback}
    served = await emailing(serve, edits)
    async with served.client() as client:
        lines = await sse_lines(client, body(stream=True))
    assert streamed_answer(lines) == (SAYING, "draft_email", ARGS)
    assert finish(lines) == "tool_calls"


async def test_an_escalated_approval_still_holds_the_answer_until_decided(serve: Serve) -> None:
    escalate = "on_timeout: escalate\n    escalate_timeout: 1h"
    edits = {RULE_TIMEOUT: "timeout: 200ms  #   run.cost_usd", ON_TIMEOUT: escalate}
    served = await emailing(serve, edits)
    store = served.sup.store

    async def after_escalation() -> None:
        record = (await pending(served))[0]
        while not (await store.get_approval(record.id)).escalations:  # type: ignore[union-attr]  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await approve(served)

    reviewer = asyncio.create_task(after_escalation())
    async with served.client() as client:
        answered = await client.post(CHAT, json=body())
    await reviewer
    assert answered.status_code == 200, answered.text
    [call] = answered.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "send_email"
    [record] = await store.list_approvals()
    assert (record.status, record.escalations) == ("approved", 1)


# --- more than one call in an answer --------------------------------------------------


LOOKUP = SimToolCall("get_customer", {"customer_id": 42})
OTHER = {**ARGS, "to": "customer 43"}
SEVERAL = Script.of(
    SimReply(text=SAYING, tool_calls=(LOOKUP, SEND, SimToolCall("send_email", OTHER))),
    "Done.",
)


async def decide_both(served: Served) -> None:
    """Approve the approval of customer 42's email, reject customer 43's."""
    records = await pending(served, 2)
    by_to = {record.args["to"]: record for record in records}
    store, audit, now = served.sup.store, served.sup.audit, time.time()
    wake = served.sup.approvals.wake
    await review.approve(
        store, audit, by_to["customer 42"].id, by="alice", now=now, on_decided=wake
    )
    await asyncio.sleep(0.2)  # the answer waits for both
    await review.reject(
        store, audit, by_to["customer 43"].id, by="bob", now=now, feedback=FEEDBACK, on_decided=wake
    )


async def test_every_call_of_an_answer_is_decided_before_it_goes_out(serve: Serve) -> None:
    served = await serve()
    served.sim.set_script("gpt-4o", SEVERAL)
    reviewer = asyncio.create_task(decide_both(served))
    async with served.client() as client:
        answered = await client.post(CHAT, json=body())
    await reviewer
    choice = answered.json()["choices"][0]
    calls = [
        (c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in choice["message"]["tool_calls"]
    ]
    assert calls == [("get_customer", {"customer_id": 42}), ("send_email", ARGS)]
    assert choice["finish_reason"] == "tool_calls"
    assert (
        FEEDBACK in choice["message"]["content"] and "customer 43" in choice["message"]["content"]
    )
    assert len(await served.sup.store.list_approvals()) == 2  # the read asked nobody


async def test_every_call_of_a_streamed_answer_is_decided_before_it_goes_out(
    serve: Serve,
) -> None:
    served = await serve()
    served.sim.set_script("gpt-4o", SEVERAL)
    reviewer = asyncio.create_task(decide_both(served))
    async with served.client() as client:
        lines = await sse_lines(client, body(stream=True))
    await reviewer
    calls: dict[int, list[str]] = {}
    for _, delta in deltas(lines):
        for piece in delta.get("tool_calls", ()):
            entry = calls.setdefault(piece["index"], ["", ""])
            entry[0] += piece["function"].get("name") or ""
            entry[1] += piece["function"].get("arguments") or ""
    assert [(name, json.loads(args)) for name, args in calls.values()] == [
        ("get_customer", {"customer_id": 42}),
        ("send_email", ARGS),
    ]
    text = "".join(delta.get("content") or "" for _, delta in deltas(lines))
    assert text.startswith(SAYING) and FEEDBACK in text
    assert finish(lines) == "tool_calls"


# --- tool results reported back -------------------------------------------------------


async def test_reporting_an_approved_call_passes_and_an_unapproved_one_is_denied(
    serve: Serve,
) -> None:
    served = await emailing(serve)
    reviewer = asyncio.create_task(approve(served))
    async with oai(served) as client:
        answer = await client.chat.completions.create(
            model="default",
            messages=USER,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
        )
        await reviewer
        [call] = answer.choices[0].message.tool_calls or []
        messages = [
            *USER,
            answer.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sent"},
        ]
        raw = await client.chat.completions.with_raw_response.create(
            model="default",
            messages=messages,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
        )
        assert raw.parse().choices[0].message.content == "The customer was told."
        steps = await served.sup.store.list_steps(raw.headers["x-corral-run"])
        reported = steps[0]
        assert (reported.kind, reported.name, reported.status) == ("tool", "send_email", "ok")

        # A send_email call no human approved, reported as run: refused.
        forged = [*USER, *tool_turn("call_forged", "send_email", json.dumps(ARGS), "sent")]
        with pytest.raises(openai.PermissionDeniedError) as raised:
            await client.chat.completions.create(
                model="default",
                messages=forged,  # type: ignore[arg-type]
                tools=TOOLS,  # type: ignore[arg-type]
            )
    error = raised.value.body
    assert isinstance(error, dict) and error["code"] == "policy.denied"
    assert "call_forged" in error["message"]
    assert served.sim.requests[SIM_CHAT] == 2  # the forged one never reached the model


async def test_reporting_an_approved_call_with_other_arguments_is_denied(serve: Serve) -> None:
    served = await emailing(serve)
    reviewer = asyncio.create_task(approve(served))
    async with served.client() as client:
        answer = (await client.post(CHAT, json=body())).json()
        await reviewer
        [call] = answer["choices"][0]["message"]["tool_calls"]
        changed = json.dumps({**ARGS, "to": "everyone"})
        turns = tool_turn(call["id"], "send_email", changed, "sent")
        refused = await client.post(CHAT, json=body(messages=[*USER, *turns]))
    assert refused.status_code == 403
    assert refusal(refused)["code"] == "policy.denied"


async def test_an_edited_call_is_reported_with_the_edited_arguments(serve: Serve) -> None:
    served = await emailing(serve)
    edited = {**ARGS, "body": "Refund sent today."}
    reviewer = asyncio.create_task(approve(served, args=edited))
    async with served.client() as client:
        answer = (await client.post(CHAT, json=body())).json()["choices"][0]["message"]
        await reviewer
        [call] = answer["tool_calls"]
        as_asked = tool_turn(call["id"], "send_email", json.dumps(ARGS), "sent")
        refused = await client.post(CHAT, json=body(messages=[*USER, *as_asked]))
        as_edited = [*USER, answer, {"role": "tool", "tool_call_id": call["id"], "content": "ok"}]
        passed = await client.post(CHAT, json=body(messages=as_edited))
    assert refused.status_code == 403 and refusal(refused)["code"] == "policy.denied"
    assert passed.status_code == 200, passed.text


async def test_a_shadowed_agent_reporting_a_write_is_denied(serve: Serve) -> None:
    served = await emailing(serve, {SUPPORT_TOOLS: f"{SUPPORT_TOOLS}\n    shadow: true"})
    turns = tool_turn("call_ran_anyway", "draft_email", json.dumps(ARGS), "drafted")
    async with served.client() as client:
        refused = await client.post(CHAT, json=body(messages=[*USER, *turns]))
    assert refused.status_code == 403
    assert refusal(refused)["code"] == "policy.denied"
    assert "shadow" in refusal(refused)["message"]
    assert served.sim.requests[SIM_CHAT] == 0


# --- streams --------------------------------------------------------------------------


KEEPALIVE = ": waiting for approval"


def deltas(lines: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """The choice deltas of an OpenAI stream's lines, with the line each is on."""
    found = []
    for index, line in enumerate(lines):
        if line.startswith("data: {"):
            event = json.loads(line.removeprefix("data: "))
            found += [(index, choice["delta"]) for choice in event.get("choices", ())]
    return found


def finish(lines: list[str]) -> str | None:
    reasons = [
        choice["finish_reason"]
        for line in lines
        if line.startswith("data: {")
        for choice in json.loads(line.removeprefix("data: ")).get("choices", ())
    ]
    return next((reason for reason in reversed(reasons) if reason), None)


def streamed_answer(lines: list[str]) -> tuple[str, str, Any]:
    """The text, tool name(s) and parsed tool arguments an OpenAI stream carried."""
    pieces = [delta for _, delta in deltas(lines)]
    calls = [call["function"] for delta in pieces for call in delta.get("tool_calls", ())]
    arguments = "".join(call.get("arguments") or "" for call in calls)
    return (
        "".join(delta.get("content") or "" for delta in pieces),
        "".join(call.get("name") or "" for call in calls),
        json.loads(arguments) if arguments else None,
    )


async def sse_lines(client: httpx.AsyncClient, payload: dict[str, Any]) -> list[str]:
    async with client.stream("POST", CHAT, json=payload) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"] == "text/event-stream"
        return [line async for line in stream.aiter_lines() if line]


async def test_a_held_stream_gets_keepalive_comments_before_the_tool_call(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(approval_answer, "KEEPALIVE_SECONDS", 0.1)
    served = await emailing(serve)
    reviewer = asyncio.create_task(approve(served, after=0.6))
    async with served.client() as client:
        lines = await sse_lines(client, body(stream=True))
    await reviewer
    keepalives = [index for index, line in enumerate(lines) if line == KEEPALIVE]
    pieces = deltas(lines)
    first_text = next(index for index, delta in pieces if delta.get("content"))
    first_call = next(index for index, delta in pieces if delta.get("tool_calls"))
    assert len(keepalives) >= 2
    assert first_text < keepalives[0] and keepalives[-1] < first_call
    assert streamed_answer(lines) == (SAYING, "send_email", ARGS)
    assert (finish(lines), lines[-1]) == ("tool_calls", "data: [DONE]")


async def test_client_libraries_stream_through_keepalive_comments(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(approval_answer, "KEEPALIVE_SECONDS", 0.05)
    served = await emailing(serve)
    reviewer = asyncio.create_task(approve(served, after=0.3))
    text, names, arguments = "", "", ""
    async with oai(served) as client:
        stream = await client.chat.completions.create(
            model="default",
            messages=USER,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            stream=True,
        )
        async for chunk in stream:
            for choice in chunk.choices:
                text += choice.delta.content or ""
                for piece in choice.delta.tool_calls or ():
                    names += piece.function.name or ""  # type: ignore[union-attr]
                    arguments += piece.function.arguments or ""  # type: ignore[union-attr]
    await reviewer
    assert (text, names, json.loads(arguments)) == (SAYING, "send_email", ARGS)

    reviewer = asyncio.create_task(approve(served, after=0.3))  # the next one asked
    async with (
        claude(served) as client,
        client.messages.stream(
            model="default",
            max_tokens=300,
            messages=USER,  # type: ignore[arg-type]
            tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
        ) as stream,
    ):
        final = await stream.get_final_message()
    await reviewer
    assert final.stop_reason == "tool_use"
    assert [block.type for block in final.content] == ["text", "tool_use"]
    assert final.content[0].text == SAYING  # type: ignore[union-attr]
    assert final.content[1].input == ARGS  # type: ignore[union-attr]


async def test_a_stream_held_past_the_hold_is_answered_when_sent_again(serve: Serve) -> None:
    served = await emailing(serve, hold("200ms"))
    async with served.client() as client:
        # Text streamed first: the stream had begun, so it ends with an error event.
        lines = await sse_lines(client, body(stream=True))
        assert any("approval_pending" in line for line in lines)
        assert not any(delta.get("tool_calls") for _, delta in deltas(lines))
        await approve(served)
        again = await sse_lines(client, body(stream=True))
    assert streamed_answer(again) == (SAYING, "send_email", ARGS)
    assert finish(again) == "tool_calls"
    assert served.sim.requests[SIM_CHAT] == 1


async def test_a_held_stream_with_nothing_streamed_yet_is_a_plain_429(serve: Serve) -> None:
    served = await serve(hold("200ms"))
    served.sim.set_script("gpt-4o", Script.of(SimReply(tool_calls=(SEND,))))
    async with served.client() as client:
        held = await client.post(CHAT, json=body(stream=True))
    assert held.status_code == 429
    assert held.headers["content-type"] == "application/json"
    assert refusal(held)["code"] == "approval_pending"


async def test_a_client_that_hangs_up_on_a_held_stream_can_send_it_again(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(approval_answer, "KEEPALIVE_SECONDS", 0.05)
    served = await emailing(serve)
    async with (
        served.client() as client,
        client.stream("POST", CHAT, json=body(stream=True)) as stream,
    ):
        lines = stream.aiter_lines()
        while await anext(lines) != KEEPALIVE:
            pass  # text came, then the answer is held: hang up now
    [record] = await pending(served)
    await approve(served)
    async with served.client() as client:
        again = await sse_lines(client, body(stream=True))
    assert streamed_answer(again) == (SAYING, "send_email", ARGS)
    assert served.sim.requests[SIM_CHAT] == 1
    assert [a.id for a in await served.sup.store.list_approvals()] == [record.id]


# --- the Anthropic door ---------------------------------------------------------------


async def test_anthropic_client_held_approved_and_reported(serve: Serve) -> None:
    served = await emailing(serve, hold("200ms"))
    async with claude(served) as client:
        with pytest.raises(anthropic.RateLimitError) as raised:
            await client.messages.create(
                model="default",
                max_tokens=300,
                messages=USER,  # type: ignore[arg-type]
                tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
            )
        assert raised.value.response.headers["retry-after"] == "5"
        error = raised.value.body
        assert isinstance(error, dict) and error["error"]["code"] == "approval_pending"
        edited = {**ARGS, "subject": "Refund sent"}
        await approve(served, args=edited)
        message = await client.messages.create(
            model="default",
            max_tokens=300,
            messages=USER,  # type: ignore[arg-type]
            tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
        )
        assert message.stop_reason == "tool_use"
        text, use = message.content
        assert text.type == "text" and text.text == SAYING
        assert use.type == "tool_use" and (use.name, use.input) == ("send_email", edited)
        turns = [
            *USER,
            {"role": "assistant", "content": [block.model_dump() for block in message.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sent"}],
            },
        ]
        done = await client.messages.create(
            model="default",
            max_tokens=300,
            messages=turns,  # type: ignore[arg-type]
            tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
        )
    assert done.content[0].text == "The customer was told."  # type: ignore[union-attr]
    assert served.sim.requests[SIM_CHAT] == 2


async def test_anthropic_stream_approved_with_edited_arguments(serve: Serve) -> None:
    served = await emailing(serve)
    edited = {**ARGS, "body": "Refund sent today."}
    reviewer = asyncio.create_task(approve(served, args=edited))
    async with (
        claude(served) as client,
        client.messages.stream(
            model="default",
            max_tokens=300,
            messages=USER,  # type: ignore[arg-type]
            tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
        ) as stream,
    ):
        final = await stream.get_final_message()
    await reviewer
    assert final.stop_reason == "tool_use"
    use = final.content[-1]
    assert use.type == "tool_use" and (use.name, use.input) == ("send_email", edited)


# --- shadow mode, scope and rules -----------------------------------------------------


async def test_shadow_mode_records_a_proposal_and_the_client_gets_the_note(
    serve: Serve,
) -> None:
    served = await emailing(serve, {SUPPORT_TOOLS: f"{SUPPORT_TOOLS}\n    shadow: true"})
    async with oai(served) as client:
        answer = await client.chat.completions.create(
            model="default",
            messages=USER,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
        )
    choice = answer.choices[0]
    assert not choice.message.tool_calls and choice.finish_reason == "stop"
    [proposal] = await served.sup.store.list_proposals()
    assert (proposal.agent, proposal.tool, proposal.args) == ("support", "send_email", ARGS)
    text = choice.message.content or ""
    assert text.startswith(SAYING)
    assert "Shadow mode" in text and proposal.id in text
    assert await served.sup.store.list_approvals() == []  # proposed, nobody asked


async def test_a_streamed_shadow_answer_gets_the_note_and_keeps_the_read(serve: Serve) -> None:
    served = await serve({SUPPORT_TOOLS: f"{SUPPORT_TOOLS}\n    shadow: true"})
    script = Script.of(SimReply(text=SAYING, tool_calls=(LOOKUP, SEND)))
    served.sim.set_script("gpt-4o", script)
    async with served.client() as client:
        lines = await sse_lines(client, body(stream=True))
    text, name, arguments = streamed_answer(lines)
    [proposal] = await served.sup.store.list_proposals()
    assert (name, arguments) == ("get_customer", {"customer_id": 42})  # reads always run
    assert text.startswith(SAYING) and proposal.id in text and text.count(SAYING) == 1
    assert finish(lines) == "tool_calls"


async def test_a_tool_above_max_scope_halts_policy_denied(serve: Serve) -> None:
    served = await emailing(serve, {SUPPORT_TOOLS: f"{SUPPORT_TOOLS}\n    max_scope: write"})
    async with served.client() as client:
        refused = await client.post(CHAT, json=body())
    assert refused.status_code == 403
    error = refusal(refused)
    assert (error["type"], error["code"]) == ("corral_halt", "policy.denied")
    assert "max_scope" in error["message"]
    assert await served.sup.store.list_approvals() == []


async def test_a_streamed_call_above_max_scope_ends_the_stream_without_it(serve: Serve) -> None:
    served = await emailing(serve, {SUPPORT_TOOLS: f"{SUPPORT_TOOLS}\n    max_scope: write"})
    async with served.client() as client:
        lines = await sse_lines(client, body(stream=True))
    assert not any(delta.get("tool_calls") for _, delta in deltas(lines))
    errors = [json.loads(line[6:]) for line in lines if '"policy.denied"' in line]
    assert errors and errors[0]["error"]["code"] == "policy.denied"


async def test_a_tool_outside_the_agents_tools_halts_policy_denied(serve: Serve) -> None:
    served = await serve()
    rogue = Script.of(SimReply(tool_calls=(SimToolCall("drop_tables", {}),)))
    served.sim.set_script("gpt-4o", rogue)
    async with served.client() as client:
        refused = await client.post(CHAT, json=body())
    assert refused.status_code == 403
    assert refusal(refused)["code"] == "policy.denied"
    assert "drop_tables" in refusal(refused)["message"]


async def test_a_rule_that_cannot_be_read_at_the_gateway_asks_fail_closed(serve: Serve) -> None:
    # The sql_write rule reads preview.rows; the gateway has no preview to run.
    served = await serve(hold("100ms"))
    write = SimToolCall("sql_write", {"sql": "UPDATE orders SET refunded = 1 WHERE id = 42"})
    served.sim.set_script("gpt-4o", Script.of(SimReply(tool_calls=(write,))))
    async with served.client() as client:
        held = await client.post(CHAT, json=body())
    assert held.status_code == 429
    [record] = await pending(served)
    assert (record.tool, record.rule) == ("sql_write", "approvals[1]")
    assert record.panel is not None and record.panel["rule"]["error"]


# --- sessions, costs and overhead -----------------------------------------------------


async def test_a_session_resending_a_held_request_does_not_trip_the_loop_detector(
    serve: Serve,
) -> None:
    served = await emailing(serve, hold("100ms"))
    session = {"X-Corral-Session": "ticket-42"}
    async with served.client(**session) as client:
        for _ in range(6):
            held = await client.post(CHAT, json=body())
            assert held.status_code == 429, held.text
        await approve(served)
        for _ in range(4):  # a client that lost the answers: each is the same one
            answered = await client.post(CHAT, json=body())
            assert answered.status_code == 200, answered.text
        [call] = answered.json()["choices"][0]["message"]["tool_calls"]
        turns = [
            *USER,
            answered.json()["choices"][0]["message"],
            {"role": "tool", "tool_call_id": call["id"], "content": "sent"},
        ]
        for _ in range(3):  # and the tool result sent again counts once
            done = await client.post(CHAT, json=body(messages=turns))
            assert done.status_code == 200, done.text
    assert done.json()["choices"][0]["message"]["content"] == "The customer was told."
    [run] = await served.sup.store.list_runs(session="ticket-42")
    assert run.status.value == "running" and run.tool_calls == 1
    assert served.sim.requests[SIM_CHAT] == 4
    kinds = {entry.kind for entry in await served.sup.store.list_audit()}
    assert "approval.approved" in kinds and not kinds & {"run.halted", "loop.warn"}


async def test_a_held_answer_is_paid_once_however_often_it_is_asked_for(serve: Serve) -> None:
    served = await emailing(serve, hold("100ms"))
    async with served.client(**{"X-Corral-Session": "s-cost"}) as client:
        first = await client.post(CHAT, json=body())
        assert first.status_code == 429
        run_id = first.headers["x-corral-run"]
        paid = await served.sup.store.get_run(run_id)
        assert paid is not None and paid.cost_usd > 0
        for _ in range(3):
            assert (await client.post(CHAT, json=body())).status_code == 429
        await approve(served)
        answered = await client.post(CHAT, json=body())
    assert answered.status_code == 200 and answered.headers["x-corral-run"] == run_id
    run = await served.sup.store.get_run(run_id)
    assert run is not None and run.cost_usd == pytest.approx(paid.cost_usd)


def overhead_sum(served: Served) -> float:
    total = served.app.metrics.registry.get_sample_value("corral_gateway_overhead_seconds_sum")
    assert total is not None
    return total


async def test_waiting_for_a_human_is_not_the_gateways_overhead(serve: Serve) -> None:
    served = await emailing(serve, hold("300ms"))
    async with served.client() as client:
        # Held past the hold once, then answered from the approval after a wait of its own.
        assert (await client.post(CHAT, json=body())).status_code == 429
        reviewer = asyncio.create_task(approve(served, after=0.2))
        answered = await client.post(CHAT, json=body())
        await reviewer
        # Streamed: held past the hold (after its text), then sent again and held anew.
        await sse_lines(client, body(stream=True))
        reviewer = asyncio.create_task(approve(served, after=0.2))
        streamed = await sse_lines(client, body(stream=True))
        await reviewer
    assert answered.status_code == 200 and streamed[-1] == "data: [DONE]"
    runs = {r.id: r for r in await served.sup.store.list_runs()}
    waited = runs[answered.headers["x-corral-run"]].waiting_s
    assert waited >= 0.2
    # Generous: the gateway's own time is milliseconds, the human's a fifth of a second.
    assert float(answered.headers["x-corral-overhead-ms"]) < 1000 * waited / 2
    assert overhead_sum(served) < 0.2


# --- notifications --------------------------------------------------------------------


class Hook:
    """A loopback webhook that keeps what it is posted and answers `status`."""

    def __init__(self) -> None:
        self.url = ""
        self.status = 200
        self.posts: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append(await request.json())
        self.arrived.set()
        return web.Response(status=self.status)


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    receiver = Hook()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    yield receiver
    await runner.cleanup()


def notify(hook: Hook, **options: str) -> dict[str, str]:
    extra = "".join(f", {name}: {value}" for name, value in options.items())
    return {NOTIFY: f'approvals_notify: {{webhook: "{hook.url}"{extra}}}'}


async def test_the_webhook_receives_the_approval_request(serve: Serve, hook: Hook) -> None:
    served = await emailing(serve, notify(hook))
    reviewer = asyncio.create_task(approve(served))
    async with served.client() as client:
        answered = await client.post(CHAT, json=body())
    record = await reviewer
    assert answered.status_code == 200
    await asyncio.wait_for(hook.arrived.wait(), 5)
    [posted] = hook.posts
    assert (posted["id"], posted["tool"], posted["args"]) == (record.id, "send_email", ARGS)
    assert posted["reason"] == SAYING
    assert posted["agent"] == "support" and posted["door"] == "gateway"
    assert record.id in posted["text"] and "send_email" in posted["text"]
    assert "\n" not in posted["text"]


async def test_a_failing_webhook_does_not_lose_the_approval(serve: Serve, hook: Hook) -> None:
    hook.status = 500
    served = await emailing(serve, notify(hook, attempts="2", backoff="10ms") | hold("300ms"))
    async with served.client() as client:
        assert (await client.post(CHAT, json=body())).status_code == 429
        await asyncio.wait_for(hook.arrived.wait(), 5)
        await served.sup.notifier.drain()
        assert len(hook.posts) == 2  # tried twice, refused both times
        await approve(served)
        answered = await client.post(CHAT, json=body())
    assert answered.status_code == 200
    [call] = answered.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "send_email"
    events = [e.kind for e in await served.sup.store.list_audit()]
    assert "approval.notify_failed" in events and "approval.approved" in events


# --- bugs outside the gateway mechanics (xfail until fixed where they are) ------------


async def test_re_sending_a_held_request_adds_no_step_to_the_session(serve: Serve) -> None:
    served = await emailing(serve, {**hold("100ms"), "steps: 40": "steps: 4"})
    session = {"X-Corral-Session": "s-steps"}
    async with served.client(**session) as client:
        for _ in range(5):
            assert (await client.post(CHAT, json=body())).status_code == 429
    [run] = await served.sup.store.list_runs(session="s-steps")
    steps = await served.sup.store.list_steps(run.id)
    # The gateway restarts (here: another on the same store, once the first's lease is
    # gone) and the conversation goes on: 3 calls made, under the cap of 4.
    other = await serve({**hold("100ms"), "steps: 40": "steps: 4"})
    await served.sup.store.drop_leases([served.sup.owner])
    await approve(other)
    async with other.client(other.agent_key, **session) as client:
        answered = await client.post(CHAT, json=body())
        message = answered.json()["choices"][0]["message"]
        call_id = message["tool_calls"][0]["id"]
        turns = [*USER, message, {"role": "tool", "tool_call_id": call_id, "content": "sent"}]
        done = await client.post(CHAT, json=body(messages=turns))
    assert done.status_code == 200, done.text
    assert (len(steps), run.steps) == (5, 1)


BILLING = {
    "  summarizer:\n": "  billing:\n    type: operational\n    route: default\n"
    "    tools: [send_email]\n  summarizer:\n"
}


async def test_an_approval_admits_the_reports_of_its_own_agent_only(serve: Serve) -> None:
    served = await emailing(serve, BILLING)
    reviewer = asyncio.create_task(approve(served))
    async with served.client() as client:
        answer = (await client.post(CHAT, json=body())).json()["choices"][0]["message"]
    await reviewer
    [call] = answer["tool_calls"]
    turns = tool_turn(call["id"], "send_email", call["function"]["arguments"], "sent")
    async with served.client(await served.key("billing")) as other:
        reported = await other.post(CHAT, json=body(messages=[*USER, *turns]))
    assert reported.status_code == 403, reported.text
    assert refusal(reported)["code"] == "policy.denied"


RULES = "approvals:                              # first rule that matches decides\n"
LATE_RULE = "  - when: 'tool == \"draft_email\" && run.steps >= 1'\n    timeout: 1h\n"


async def test_a_call_delivered_without_approval_may_be_reported(serve: Serve) -> None:
    # Drafts need a human once the run has made a step: the session's first answer has
    # none yet, so its draft goes out as it is; its report comes after that step.
    served = await serve({RULES: RULES + LATE_RULE})
    draft = SimReply(text="Drafting.", tool_calls=(SimToolCall("draft_email", ARGS),))
    served.sim.set_script("gpt-4o", Script.of(draft, "Drafted."))
    async with served.client(**{"X-Corral-Session": "s-late"}) as client:
        first = await client.post(CHAT, json=body())
        assert first.status_code == 200, first.text
        message = first.json()["choices"][0]["message"]
        [call] = message["tool_calls"]
        assert await served.sup.store.list_approvals() == []
        turns = [*USER, message, {"role": "tool", "tool_call_id": call["id"], "content": "ok"}]
        reported = await client.post(CHAT, json=body(messages=turns))
    assert reported.status_code == 200, reported.text
