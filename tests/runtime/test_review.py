"""The reviewer's actions (corral.runtime.review) on a real SQLite store: deciding
approvals (edited arguments, timeouts, races) and judging shadow proposals.

`seed` and the records it makes are shared with the CLI's and the admin API's tests.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from corral.runtime import review
from corral.runtime.operations import InvalidArgument, NotFound, StateConflict
from corral.state import ApprovalRecord, ProposalRecord, RunRecord, SQLiteStore, Store
from corral.telemetry.audit import AuditLog

T0 = 1_700_000_000.0
NOW = T0 + 100.0
SCHEMA = {
    "type": "object",
    "properties": {
        "to": {"type": "string", "minLength": 3},
        "body": {"type": "string"},
        "cc": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["to"],
    "additionalProperties": False,
}
ARGS = {"to": "ada@example.com", "body": "Your refund is on its way."}


def panel(tool: str, args: Any, **changes: Any) -> dict[str, Any]:
    """What the approval gate puts before the reviewer, as it builds it."""
    return {
        "agent": "support",
        "agent_type": "operational",
        "session": "s-1",
        "task": "refund ticket 42",
        "tool": tool,
        "scope": "irreversible",
        "args": args,
        "reason": "the customer asked for a refund",
        "expected": "the customer is told",
        "rollback": "send a correction",
        "rule": {"source": "approvals[0]", "when": 'tool == "send_email"'},
        "on_timeout": "cancel",
        "on_reject": "replan",
        "fallback_tool": None,
        "escalate_to": None,
        "run": {"cost_usd": 0.0123, "steps": 4, "tool_calls": 2, "tokens": 1800},
        "last_steps": [
            {"seq": 3, "kind": "tool", "name": "get_customer", "status": "ok"},
            {"seq": 4, "kind": "llm", "name": "fast", "status": "ok"},
        ],
        "preview": {"recipients": 1},
        "schema": SCHEMA,
        "door": "sdk",
        **changes,
    }


def approval(approval_id: str, **changes: Any) -> ApprovalRecord:
    tool = changes.pop("tool", "send_email")
    args = changes.pop("args", ARGS)
    fields: dict[str, Any] = {
        "id": approval_id,
        "run_id": "r1",
        "step": 5,
        "tool": tool,
        "args": args,
        "rule": 'tool == "send_email"',
        "requested_at": T0,
        "timeout_at": T0 + 3600,
        "agent": "support",
        "args_hash": "h",
        "panel": panel(tool, args),
        "answer": {"held": "model answer"},
        **changes,
    }
    return ApprovalRecord(**fields)


def proposal(proposal_id: str, agent: str, tool: str, at: float) -> ProposalRecord:
    return ProposalRecord(
        id=proposal_id, run_id="r1" if agent == "support" else "r2", agent=agent, tool=tool,
        args={"n": at}, scope="write", proposed_at=at, result={"ok": True},
    )  # fmt: skip


def run(run_id: str, agent: str) -> RunRecord:
    return RunRecord(id=run_id, agent=agent, agent_type="operational", created_at=T0, updated_at=T0)


async def seed(store: Store) -> None:
    """Two runs; approvals in every state the actions tell apart; shadow proposals."""
    await store.create_run(run("r1", "support"))
    await store.create_run(run("r2", "analyzer"))
    for record in (
        approval("apr_send"),
        approval("apr_bare", requested_at=T0 + 1, panel=panel("send_email", ARGS, schema=None)),
        approval("apr_late", requested_at=T0 + 2, timeout_at=T0 + 10),
        approval("apr_done", requested_at=T0 + 3),
        approval("apr_gone", requested_at=T0 + 4, run_id="r2", agent="analyzer"),
    ):
        await store.add_approval(record)
    await store.decide_approval("apr_done", "rejected", by="bob", at=T0 + 5, note="not today")
    await store.decide_approval("apr_gone", "timeout", by=None, at=T0 + 6)
    for record in (
        proposal("prp_1", "support", "refund", T0 + 1),
        proposal("prp_2", "support", "refund", T0 + 2),
        proposal("prp_3", "support", "send_email", T0 + 3),
        proposal("prp_4", "analyzer", "sql_write", T0 + 4),
        proposal("prp_5", "support", "refund", T0 + 5),
    ):
        await store.add_proposal(record)
    await store.review_proposal("prp_2", "disagree", by="carol", at=T0 + 7, note="wrong amount")


async def snapshot(store: Store) -> tuple[Any, ...]:
    return (await store.list_approvals(), await store.list_proposals(), await store.list_audit())


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "corral.db") as opened:
        await seed(opened)
        yield opened


@pytest.fixture
def audit(store: SQLiteStore) -> AuditLog:
    return AuditLog(store, clock=lambda: NOW)


async def audited(store: Store) -> list[tuple[str, str | None, dict[str, Any]]]:
    return [(e.kind, e.run_id, dict(e.payload)) for e in await store.list_audit()]


# --- listing and showing ----------------------------------------------------------


async def test_list_approvals_pending_by_default_oldest_first(store: SQLiteStore) -> None:
    rows = await review.list_approvals(store)
    assert [row["id"] for row in rows] == ["apr_send", "apr_bare", "apr_late"]
    assert all("answer" not in row for row in rows)
    assert rows[0]["panel"]["reason"] == "the customer asked for a refund"


@pytest.mark.parametrize(
    ("status", "ids"),
    [
        ("rejected", ["apr_done"]),
        ("timeout", ["apr_gone"]),
        ("approved", []),
        ("all", ["apr_send", "apr_bare", "apr_late", "apr_done", "apr_gone"]),
    ],
)
async def test_list_approvals_by_status(store: SQLiteStore, status: str, ids: list[str]) -> None:
    assert [row["id"] for row in await review.list_approvals(store, status=status)] == ids


async def test_list_approvals_refuses_an_unknown_status(store: SQLiteStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await review.list_approvals(store, status="waiting")
    assert str(caught.value) == (
        "status must be one of pending, approved, rejected, timeout, all, got 'waiting'"
    )


async def test_show_approval_has_every_field_but_the_held_answer(store: SQLiteStore) -> None:
    shown = await review.show_approval(store, "apr_done")
    assert set(shown) == set(ApprovalRecord.__dataclass_fields__) - {"answer"}
    assert (shown["status"], shown["decided_by"], shown["note"]) == ("rejected", "bob", "not today")
    with pytest.raises(NotFound, match="no approval 'apr_ghost' in the store"):
        await review.show_approval(store, "apr_ghost")


# --- approving --------------------------------------------------------------------


async def test_approve_decides_audits_and_wakes(store: SQLiteStore, audit: AuditLog) -> None:
    woken: list[str] = []
    decided = await review.approve(
        store, audit, "apr_send", by="alice", now=NOW, note="ok", on_decided=woken.append
    )
    assert (decided["status"], decided["decided_by"], decided["decided_at"]) == (
        "approved",
        "alice",
        NOW,
    )
    assert (decided["note"], decided["approved_args"]) == ("ok", None)
    stored = await store.get_approval("apr_send")
    assert stored is not None
    assert review.approval_json(stored) == decided
    assert woken == ["apr_send"]
    assert await audited(store) == [
        (
            "approval.approved",
            "r1",
            {"id": "apr_send", "by": "alice", "note": "ok", "edited": False},
        )
    ]
    assert (await audit.verify()).ok


async def test_approve_with_edited_args_that_fit_the_schema(
    store: SQLiteStore, audit: AuditLog
) -> None:
    edited = {"to": "ada@example.com", "body": "Refund sent.", "cc": ["lead@example.com"]}
    decided = await review.approve(store, audit, "apr_send", by="alice", now=NOW, args=edited)
    assert decided["approved_args"] == edited
    stored = await store.get_approval("apr_send")
    assert stored is not None and (stored.approved_args, stored.args) == (edited, ARGS)
    [(kind, _, payload)] = await audited(store)
    assert (kind, payload) == (
        "approval.approved",
        {"id": "apr_send", "by": "alice", "note": None, "edited": True, "args": edited},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([1], "edited args for approval 'apr_send' must be a JSON object, got list"),
        ("to=x", "must be a JSON object, got str"),
        ({"to": 5}, "do not fit send_email's schema: at args.to: 5 is not of type 'string'"),
        ({"to": "ab"}, "at args.to: 'ab' is too short"),
        ({"body": "hi"}, "at args: 'to' is a required property"),
        ({"to": "ada", "cc": ["x", 2]}, "at args.cc[1]: 2 is not of type 'string'"),
        ({"to": "ada", "bcc": "x"}, "at args: Additional properties are not allowed ('bcc'"),
    ],
)
async def test_approve_refuses_edited_args_that_do_not_fit(
    store: SQLiteStore, audit: AuditLog, args: Any, message: str
) -> None:
    before = await snapshot(store)
    with pytest.raises(InvalidArgument) as caught:
        await review.approve(store, audit, "apr_send", by="alice", now=NOW, args=args)
    assert message in str(caught.value)
    assert await snapshot(store) == before


async def test_edited_args_need_a_schema_to_check_them_against(
    store: SQLiteStore, audit: AuditLog
) -> None:
    before = await snapshot(store)
    with pytest.raises(InvalidArgument) as caught:
        await review.approve(store, audit, "apr_bare", by="alice", now=NOW, args={"to": "x"})
    assert str(caught.value) == (
        "edited args for approval 'apr_bare' are refused: the schema of send_email's"
        " arguments is unknown, so there is nothing to check them against"
    )
    assert await snapshot(store) == before
    # Without edits it is approved as it stands.
    decided = await review.approve(store, audit, "apr_bare", by="alice", now=NOW)
    assert decided["status"] == "approved"


async def test_an_invalid_schema_refuses_edits_and_says_so(
    store: SQLiteStore, audit: AuditLog
) -> None:
    broken = panel("send_email", ARGS, schema={"type": "objekt"})
    await store.add_approval(approval("apr_odd", panel=broken))
    with pytest.raises(InvalidArgument, match="send_email's argument schema is invalid"):
        await review.approve(store, audit, "apr_odd", by="alice", now=NOW, args={"to": "ada"})


@pytest.mark.parametrize(
    ("approval_id", "error", "message"),
    [
        ("apr_ghost", NotFound, "no approval 'apr_ghost' in the store"),
        (
            "apr_done",
            StateConflict,
            "approval 'apr_done' was already rejected by bob at 2023-11-14 22:13:25 UTC",
        ),
        ("apr_gone", StateConflict, "approval 'apr_gone' already timed out, at 2023-11-14"),
        (
            "apr_late",
            StateConflict,
            "approval 'apr_late' timed out at 2023-11-14 22:13:30 UTC: too late to approve it",
        ),
    ],
)
async def test_approve_refuses_what_is_not_pending_or_out_of_time(
    store: SQLiteStore, audit: AuditLog, approval_id: str, error: type[Exception], message: str
) -> None:
    before = await snapshot(store)
    woken: list[str] = []
    with pytest.raises(error) as caught:
        await review.approve(
            store, audit, approval_id, by="alice", now=NOW, args={"to": "ada"},
            on_decided=woken.append,
        )  # fmt: skip
    assert message in str(caught.value)
    assert await snapshot(store) == before
    assert woken == []


async def test_of_two_racing_approvers_exactly_one_wins(
    store: SQLiteStore, audit: AuditLog
) -> None:
    results = await asyncio.gather(
        review.approve(store, audit, "apr_send", by="alice", now=NOW),
        review.approve(store, audit, "apr_send", by="bob", now=NOW, note="me too"),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, dict)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1
    winner = won[0]["decided_by"]
    assert isinstance(lost[0], StateConflict)
    assert f"approval 'apr_send' was already approved by {winner} at" in str(lost[0])
    stored = await store.get_approval("apr_send")
    assert stored is not None and stored.decided_by == winner
    assert [(kind, p["by"]) for kind, _, p in await audited(store)] == [
        ("approval.approved", winner)
    ]


async def test_a_reviewer_and_a_rejecter_racing_one_decides(
    store: SQLiteStore, audit: AuditLog
) -> None:
    results = await asyncio.gather(
        review.approve(store, audit, "apr_send", by="alice", now=NOW),
        review.reject(store, audit, "apr_send", by="bob", now=NOW, feedback="no"),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["StateConflict", "dict"]
    assert len(await store.list_audit()) == 1


async def test_losing_the_race_after_reading_pending_names_the_winner(
    store: SQLiteStore, audit: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check-and-set itself refuses: the approval read as pending was decided
    between that read and the write."""
    stale = await store.get_approval("apr_send")
    await store.decide_approval("apr_send", "rejected", by="bob", at=NOW - 1, note="no")
    reads = [stale]
    real = store.get_approval

    async def first_read_stale(approval_id: str) -> ApprovalRecord | None:
        return reads.pop() if reads else await real(approval_id)

    monkeypatch.setattr(store, "get_approval", first_read_stale)
    with pytest.raises(StateConflict) as caught:
        await review.approve(store, audit, "apr_send", by="alice", now=NOW)
    assert str(caught.value).startswith("approval 'apr_send' was already rejected by bob at")
    assert await store.list_audit() == []


# --- rejecting --------------------------------------------------------------------


async def test_reject_keeps_the_feedback_and_audits_it(store: SQLiteStore, audit: AuditLog) -> None:
    woken: list[str] = []
    decided = await review.reject(
        store, audit, "apr_send", by="bob", now=NOW, feedback="ask first", on_decided=woken.append
    )
    assert (decided["status"], decided["decided_by"], decided["note"]) == (
        "rejected",
        "bob",
        "ask first",
    )
    stored = await store.get_approval("apr_send")
    assert stored is not None and (stored.status, stored.note) == ("rejected", "ask first")
    assert woken == ["apr_send"]
    assert await audited(store) == [
        ("approval.rejected", "r1", {"id": "apr_send", "by": "bob", "feedback": "ask first"})
    ]


@pytest.mark.parametrize("feedback", ["", "   "])
async def test_reject_needs_feedback(store: SQLiteStore, audit: AuditLog, feedback: str) -> None:
    before = await snapshot(store)
    with pytest.raises(InvalidArgument, match="rejecting approval 'apr_send' needs feedback"):
        await review.reject(store, audit, "apr_send", by="bob", now=NOW, feedback=feedback)
    assert await snapshot(store) == before


@pytest.mark.parametrize(
    ("approval_id", "message"),
    [
        ("apr_done", "approval 'apr_done' was already rejected by bob at"),
        (
            "apr_late",
            "approval 'apr_late' timed out at 2023-11-14 22:13:30 UTC: too late to reject",
        ),
    ],
)
async def test_reject_refuses_what_is_decided_or_out_of_time(
    store: SQLiteStore, audit: AuditLog, approval_id: str, message: str
) -> None:
    before = await snapshot(store)
    with pytest.raises(StateConflict, match=message):
        await review.reject(store, audit, approval_id, by="bob", now=NOW, feedback="no")
    assert await snapshot(store) == before


# --- shadow -----------------------------------------------------------------------


async def test_list_proposals_all_or_by_agent(store: SQLiteStore) -> None:
    every = await review.list_proposals(store)
    assert [p["id"] for p in every] == ["prp_1", "prp_2", "prp_3", "prp_4", "prp_5"]
    assert set(every[0]) == set(ProposalRecord.__dataclass_fields__)
    assert [p["id"] for p in await review.list_proposals(store, agent="analyzer")] == ["prp_4"]


async def test_review_a_proposal_once(store: SQLiteStore, audit: AuditLog) -> None:
    reviewed = await review.review_proposal(
        store, audit, "prp_1", "agree", by="carol", now=NOW, note="right call"
    )
    assert (reviewed["verdict"], reviewed["reviewed_by"], reviewed["reviewed_at"]) == (
        "agree",
        "carol",
        NOW,
    )
    stored = await store.get_proposal("prp_1")
    assert stored is not None and review.proposal_json(stored) == reviewed
    assert await audited(store) == [
        (
            "shadow.reviewed",
            "r1",
            {"id": "prp_1", "by": "carol", "verdict": "agree", "note": "right call"},
        )
    ]
    before = await snapshot(store)
    with pytest.raises(StateConflict) as caught:
        await review.review_proposal(store, audit, "prp_1", "disagree", by="dave", now=NOW + 1)
    assert str(caught.value) == (
        "proposal 'prp_1' was already reviewed: carol said agree at 2023-11-14 22:15:00 UTC"
    )
    assert await snapshot(store) == before


@pytest.mark.parametrize(
    ("proposal_id", "verdict", "error", "message"),
    [
        ("prp_1", "maybe", InvalidArgument, "verdict must be one of agree, disagree, got 'maybe'"),
        ("prp_ghost", "agree", NotFound, "no proposal 'prp_ghost' in the store"),
        ("prp_2", "agree", StateConflict, "already reviewed: carol said disagree at"),
    ],
)
async def test_review_proposal_refusals(
    store: SQLiteStore,
    audit: AuditLog,
    proposal_id: str,
    verdict: str,
    error: type[Exception],
    message: str,
) -> None:
    before = await snapshot(store)
    with pytest.raises(error, match=message):
        await review.review_proposal(store, audit, proposal_id, verdict, by="dave", now=NOW)
    assert await snapshot(store) == before


async def test_shadow_report_per_agent_and_tool(store: SQLiteStore, audit: AuditLog) -> None:
    await review.review_proposal(store, audit, "prp_1", "agree", by="carol", now=NOW)
    await review.review_proposal(store, audit, "prp_5", "agree", by="carol", now=NOW)
    report = await review.shadow_report(store)
    assert report == [
        {
            "agent": "analyzer", "tool": "sql_write", "proposals": 1, "reviewed": 0,
            "agree": 0, "disagree": 0, "agreement": None,
        },
        {
            "agent": "support", "tool": "refund", "proposals": 3, "reviewed": 3,
            "agree": 2, "disagree": 1, "agreement": pytest.approx(2 / 3),
        },
        {
            "agent": "support", "tool": "send_email", "proposals": 1, "reviewed": 0,
            "agree": 0, "disagree": 0, "agreement": None,
        },
    ]  # fmt: skip
    assert [r["tool"] for r in await review.shadow_report(store, agent="support")] == [
        "refund",
        "send_email",
    ]
    assert await review.shadow_report(store, agent="nobody") == []


# --- who decides ------------------------------------------------------------------


def test_default_reviewer_is_the_os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(getpass, "getuser", lambda: "ada")
    assert review.default_reviewer() == "ada"

    def nobody() -> str:
        raise OSError("no username set in the environment")

    monkeypatch.setattr(getpass, "getuser", nobody)
    assert review.default_reviewer() == "unknown"
