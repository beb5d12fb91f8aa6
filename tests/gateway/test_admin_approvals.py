"""The admin API's approval and shadow routes, through AdminAPI.handle on a real SQLite
store, their answers checked against the OpenAPI document; and once over HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from corral import Supervisor
from corral.gateway.admin import AdminAPI
from corral.gateway.openapi import OPENAPI
from corral.state import ApprovalRecord, ProposalRecord, Store
from tests.gateway.conftest import Serve
from tests.gateway.test_admin import ENV, refused
from tests.gateway.test_openapi import properties
from tests.runtime.test_review import ARGS, NOW, approval, seed, snapshot
from tests.support import example_policy

Reply = tuple[int, Any]


def conforms(payload: Any, schema: str) -> None:
    """The payload fits the document's schema of that name, refs and all."""
    document = {"$ref": f"#/components/schemas/{schema}", "components": OPENAPI["components"]}
    Draft202012Validator(document).validate(payload)


class Reviewer:
    """The API under test, deciding as `by`, and the ids its on_decided hook was told."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.woken: list[str] = []
        self.api = AdminAPI(
            sup.store,
            sup.audit,
            sup.policy,
            sup.counters,
            clock=lambda: NOW,
            on_decided=self.woken.append,
        )

    @property
    def store(self) -> Store:
        return self.sup.store

    async def call(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
        by: str = "alice",
    ) -> Reply:
        status, payload = await self.api.handle(method, path, query or {}, body, by=by)
        orjson.dumps(payload)  # every answer must go out as JSON
        return status, payload

    async def get(self, path: str, **query: str) -> Reply:
        return await self.call("GET", path, query)

    async def post(self, path: str, body: Any = None, by: str = "alice") -> Reply:
        return await self.call("POST", path, body=body, by=by)


@pytest.fixture
async def reviewer(tmp_path: Path) -> AsyncIterator[Reviewer]:
    sup = Supervisor.from_policy(example_policy(tmp_path), env=ENV)
    await seed(sup.store)
    yield Reviewer(sup)
    await sup.close()


async def audited(store: Store) -> list[tuple[str, str | None, dict[str, Any]]]:
    return [(e.kind, e.run_id, dict(e.payload)) for e in await store.list_audit()]


# --- the document -----------------------------------------------------------------


def test_the_schemas_name_every_field_of_the_records() -> None:
    fields = set(ApprovalRecord.__dataclass_fields__)
    assert properties("Approval") == fields - {"answer"}  # the held answer is not shown
    assert properties("Proposal") == set(ProposalRecord.__dataclass_fields__)
    assert properties("Approve") == {"note", "args"}
    assert properties("Reject") == {"feedback"}
    assert properties("ProposalReview") == {"verdict", "note"}


# --- approvals --------------------------------------------------------------------


async def test_list_approvals_pending_by_default_and_by_status(reviewer: Reviewer) -> None:
    status, payload = await reviewer.get("/admin/approvals")
    assert status == 200
    conforms(payload, "ApprovalList")
    assert [a["id"] for a in payload["approvals"]] == ["apr_send", "apr_bare", "apr_late"]
    _, rejected = await reviewer.get("/admin/approvals", status="rejected")
    assert [a["id"] for a in rejected["approvals"]] == ["apr_done"]
    _, every = await reviewer.get("/admin/approvals", status="all")
    assert len(every["approvals"]) == 5


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"status": "waiting"}, "status must be one of pending, approved, rejected, timeout, all"),
        ({"status": ""}, "query parameter 'status' is empty"),
        ({"agent": "support"}, "unknown query parameter 'agent': this route takes status"),
    ],
)
async def test_list_approvals_refuses_a_bad_query(
    reviewer: Reviewer, query: dict[str, str], message: str
) -> None:
    reply = await reviewer.call("GET", "/admin/approvals", query)
    refused(reply, 400, "invalid_request_error", message)


async def test_show_approval_has_its_panel(reviewer: Reviewer) -> None:
    status, shown = await reviewer.get("/admin/approvals/apr_send")
    assert status == 200
    conforms(shown, "Approval")
    assert (shown["tool"], shown["args"], shown["panel"]["reason"]) == (
        "send_email",
        ARGS,
        "the customer asked for a refund",
    )
    assert "answer" not in shown
    refused(await reviewer.get("/admin/approvals/apr_ghost"), 404, "not_found", "apr_ghost")


async def test_approve_decides_as_the_caller_and_wakes_the_waiter(reviewer: Reviewer) -> None:
    # At a time before apr_late timed out, so it can be approved, with edited args.
    reviewer.api = AdminAPI(
        reviewer.store,
        reviewer.sup.audit,
        reviewer.sup.policy,
        reviewer.sup.counters,
        clock=lambda: NOW - 95,
        on_decided=reviewer.woken.append,
    )
    edited = {"to": "bob@example.com"}
    status, decided = await reviewer.post(
        "/admin/approvals/apr_late/approve", {"note": "fixed", "args": edited}, by="ops-key"
    )
    assert status == 200, decided
    conforms(decided, "Approval")
    assert (decided["status"], decided["decided_by"], decided["approved_args"]) == (
        "approved",
        "ops-key",
        edited,
    )
    assert reviewer.woken == ["apr_late"]
    # The audit log's copy is for reading, so redacted (the example redacts storage).
    shown = {"to": "[EMAIL_ADDRESS]"}
    assert await audited(reviewer.store) == [
        (
            "approval.approved",
            "r1",
            {"id": "apr_late", "by": "ops-key", "note": "fixed", "edited": True, "args": shown},
        )
    ]


@pytest.mark.parametrize("body", [None, {}])
async def test_approve_takes_an_empty_body(reviewer: Reviewer, body: Any) -> None:
    status, decided = await reviewer.post("/admin/approvals/apr_send/approve", body)
    assert (status, decided["status"], decided["decided_by"]) == (200, "approved", "alice")
    assert decided["approved_args"] is None


async def test_handle_names_the_admin_when_not_told_who(reviewer: Reviewer) -> None:
    status, decided = await reviewer.api.handle("POST", "/admin/approvals/apr_send/approve", {}, {})
    assert (status, decided["decided_by"]) == (200, "admin")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1], "the body must be a JSON object"),
        ({"notes": "x"}, "unknown body field 'notes': this route takes note, args"),
        ({"note": 5}, "note must be a string, got int"),
        ({"args": [1]}, "edited args for approval 'apr_send' must be a JSON object, got list"),
        ({"args": {"to": 5}}, "at args.to: 5 is not of type 'string'"),
        ({"args": {"to": "ada", "bcc": "x"}}, "Additional properties are not allowed"),
    ],
)
async def test_approve_refuses_a_bad_body_and_changes_nothing(
    reviewer: Reviewer, body: Any, message: str
) -> None:
    before = await snapshot(reviewer.store)
    reply = await reviewer.post("/admin/approvals/apr_send/approve", body)
    refused(reply, 400, "invalid_request_error", message)
    assert await snapshot(reviewer.store) == before
    assert reviewer.woken == []


@pytest.mark.parametrize(
    ("path", "body", "status", "kind", "message"),
    [
        ("apr_ghost/approve", None, 404, "not_found", "no approval 'apr_ghost' in the store"),
        ("apr_ghost/reject", {"feedback": "no"}, 404, "not_found", "no approval 'apr_ghost'"),
        ("apr_done/approve", None, 409, "conflict", "was already rejected by bob at 2023-11-14"),
        ("apr_done/reject", {"feedback": "no"}, 409, "conflict", "was already rejected by bob"),
        ("apr_gone/approve", None, 409, "conflict", "approval 'apr_gone' already timed out"),
        ("apr_late/approve", None, 409, "conflict", "timed out at 2023-11-14 22:13:30 UTC"),
        ("apr_late/reject", {"feedback": "no"}, 409, "conflict", "too late to reject it"),
        ("apr_bare/approve", {"args": {"to": "x"}}, 400, "invalid_request_error", "is unknown"),
    ],
)
async def test_a_decision_on_what_is_not_waiting_is_refused(
    reviewer: Reviewer, path: str, body: Any, status: int, kind: str, message: str
) -> None:
    before = await snapshot(reviewer.store)
    refused(await reviewer.post(f"/admin/approvals/{path}", body), status, kind, message)
    assert await snapshot(reviewer.store) == before
    assert reviewer.woken == []


async def test_reject_keeps_the_feedback(reviewer: Reviewer) -> None:
    status, decided = await reviewer.post(
        "/admin/approvals/apr_send/reject", {"feedback": "ask first"}, by="bob"
    )
    assert status == 200, decided
    assert (decided["status"], decided["decided_by"], decided["note"]) == (
        "rejected",
        "bob",
        "ask first",
    )
    assert reviewer.woken == ["apr_send"]
    assert await audited(reviewer.store) == [
        ("approval.rejected", "r1", {"id": "apr_send", "by": "bob", "feedback": "ask first"})
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "a rejection needs feedback for the agent"),
        ({}, "a rejection needs feedback for the agent"),
        ({"feedback": None}, "a rejection needs feedback for the agent"),
        ({"feedback": "  "}, "rejecting approval 'apr_send' needs feedback"),
        ({"feedback": 1}, "feedback must be a string, got int"),
        ({"feedback": "no", "note": "x"}, "unknown body field 'note': this route takes feedback"),
        ("no", "the body must be a JSON object"),
    ],
)
async def test_reject_refuses_a_body_without_feedback(
    reviewer: Reviewer, body: Any, message: str
) -> None:
    before = await snapshot(reviewer.store)
    reply = await reviewer.post("/admin/approvals/apr_send/reject", body)
    refused(reply, 400, "invalid_request_error", message)
    assert await snapshot(reviewer.store) == before


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/admin/approvals", "GET"),
        ("POST", "/admin/approvals/apr_send", "GET"),
        ("GET", "/admin/approvals/apr_send/approve", "POST"),
        ("GET", "/admin/approvals/apr_send/reject", "POST"),
        ("POST", "/admin/shadow", "GET"),
        ("POST", "/admin/shadow/report", "GET"),
        ("GET", "/admin/shadow/prp_1/review", "POST"),
    ],
)
async def test_a_wrong_method_is_405(
    reviewer: Reviewer, method: str, path: str, allowed: str
) -> None:
    before = await snapshot(reviewer.store)
    refused(await reviewer.call(method, path), 405, "method_not_allowed", f"takes {allowed}")
    assert await snapshot(reviewer.store) == before


# --- shadow -----------------------------------------------------------------------


async def test_list_proposals_all_or_by_agent(reviewer: Reviewer) -> None:
    status, payload = await reviewer.get("/admin/shadow")
    assert status == 200
    conforms(payload, "ProposalList")
    assert [p["id"] for p in payload["proposals"]] == ["prp_1", "prp_2", "prp_3", "prp_4", "prp_5"]
    _, only = await reviewer.get("/admin/shadow", agent="analyzer")
    assert [p["id"] for p in only["proposals"]] == ["prp_4"]
    refused(await reviewer.get("/admin/shadow", tool="x"), 400, "invalid_request_error", "'tool'")


async def test_review_a_proposal_once(reviewer: Reviewer) -> None:
    status, reviewed = await reviewer.post(
        "/admin/shadow/prp_1/review", {"verdict": "agree", "note": "right"}, by="carol"
    )
    assert status == 200, reviewed
    conforms(reviewed, "Proposal")
    assert (reviewed["verdict"], reviewed["reviewed_by"]) == ("agree", "carol")
    assert await audited(reviewer.store) == [
        (
            "shadow.reviewed",
            "r1",
            {"id": "prp_1", "by": "carol", "verdict": "agree", "note": "right"},
        )
    ]
    again = await reviewer.post("/admin/shadow/prp_1/review", {"verdict": "disagree"})
    refused(again, 409, "conflict", "proposal 'prp_1' was already reviewed: carol said agree at")


@pytest.mark.parametrize(
    ("proposal_id", "body", "status", "message"),
    [
        ("prp_1", None, 400, "a review needs a verdict, agree or disagree"),
        ("prp_1", {"verdict": "maybe"}, 400, "verdict must be one of agree, disagree"),
        ("prp_1", {"verdict": "agree", "why": "x"}, 400, "unknown body field 'why'"),
        ("prp_1", {"verdict": "agree", "note": 3}, 400, "note must be a string, got int"),
        ("prp_ghost", {"verdict": "agree"}, 404, "no proposal 'prp_ghost' in the store"),
        ("prp_2", {"verdict": "agree"}, 409, "already reviewed: carol said disagree"),
    ],
)
async def test_review_proposal_refusals_change_nothing(
    reviewer: Reviewer, proposal_id: str, body: Any, status: int, message: str
) -> None:
    before = await snapshot(reviewer.store)
    reply = await reviewer.post(f"/admin/shadow/{proposal_id}/review", body)
    kind = {400: "invalid_request_error", 404: "not_found", 409: "conflict"}[status]
    refused(reply, status, kind, message)
    assert await snapshot(reviewer.store) == before


async def test_shadow_report(reviewer: Reviewer) -> None:
    await reviewer.post("/admin/shadow/prp_1/review", {"verdict": "agree"})
    status, payload = await reviewer.get("/admin/shadow/report")
    assert status == 200
    conforms(payload, "ShadowReport")
    assert [(r["agent"], r["tool"], r["reviewed"], r["agreement"]) for r in payload["report"]] == [
        ("analyzer", "sql_write", 0, None),
        ("support", "refund", 2, 0.5),
        ("support", "send_email", 0, None),
    ]
    _, only = await reviewer.get("/admin/shadow/report", agent="analyzer")
    assert [r["tool"] for r in only["report"]] == ["sql_write"]


# --- over HTTP --------------------------------------------------------------------


async def test_over_http_the_routes_answer_200_400_404_409(serve: Serve) -> None:
    gw = await serve()
    await seed(gw.sup.store)
    await gw.sup.store.add_approval(approval("apr_live", timeout_at=time.time() + 3600))
    async with gw.admin() as admin:
        listed = await admin.get("/admin/approvals")
        assert listed.status_code == 200
        assert "apr_live" in [a["id"] for a in listed.json()["approvals"]]
        assert (await admin.post("/admin/approvals/apr_live/reject", json={})).status_code == 400
        approved = await admin.post("/admin/approvals/apr_live/approve", json={"note": "ok"})
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "approved"
        again = await admin.post("/admin/approvals/apr_live/approve")
        assert again.status_code == 409
        assert "was already approved by" in again.json()["error"]["message"]
        assert (await admin.get("/admin/approvals/apr_ghost")).status_code == 404
        report = await admin.get("/admin/shadow/report")
        assert report.status_code == 200 and len(report.json()["report"]) == 3
    kinds = [e.kind for e in await gw.sup.store.list_audit()]
    assert "approval.approved" in kinds
