"""`corral approvals ls|show|approve|reject` and `corral shadow ls|review|report` against a
real SQLite file."""

from __future__ import annotations

import getpass
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from corral.runtime import review
from corral.state import Store
from tests.runtime.test_review import ARGS, T0, approval, panel, seed, snapshot
from tests.support import corral, example_policy, flat, on_store


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return example_policy(tmp_path)


async def seed_live(store: Store) -> None:
    """The shared seed (its pending approvals timed out long ago), and two that wait now."""
    await seed(store)
    soon = time.time() + 3600
    await store.add_approval(approval("apr_live", requested_at=T0 + 10, timeout_at=soon))
    halting = panel("send_email", ARGS, on_reject="halt")
    await store.add_approval(
        approval("apr_halt", requested_at=T0 + 11, timeout_at=soon, panel=halting)
    )


def audited(policy: Path) -> list[tuple[str, str | None, dict[str, Any]]]:
    entries = on_store(policy, lambda s: s.list_audit())
    return [(e.kind, e.run_id, dict(e.payload)) for e in entries]


def loaded(output: str) -> Any:
    return orjson.loads(output)


def fits(output: str) -> None:
    assert max(len(line) for line in output.splitlines()) <= 80, output


# --- approvals ls -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "line"),
    [
        ("pending", "No pending approvals."),
        ("rejected", "No rejected approvals."),
        ("all", "No approvals yet."),
    ],
)
def test_approvals_ls_empty_is_a_friendly_line(policy: Path, status: str, line: str) -> None:
    result = corral(policy, "approvals", "ls", "--status", status)
    assert result.exit_code == 0, result.output
    assert result.output == line + "\n"


def test_approvals_ls_lists_pending_with_the_time_left_in_80_columns(policy: Path) -> None:
    on_store(policy, seed_live)
    result = corral(policy, "approvals", "ls")
    assert result.exit_code == 0, result.output
    fits(result.output)
    rows = {line.split()[0]: line for line in result.output.splitlines() if "apr_" in line}
    assert set(rows) == {"apr_send", "apr_bare", "apr_late", "apr_live", "apr_halt"}
    assert "send_email" in rows["apr_live"] and "refund ticket 42" in rows["apr_live"]
    assert rows["apr_live"].split()[-1] in {"59m", "1h00m"}
    assert rows["apr_send"].split()[-1] == "none"  # its time is up


def test_approvals_ls_json_by_status(policy: Path) -> None:
    on_store(policy, seed_live)
    result = corral(policy, "approvals", "ls", "--status", "all", "--json")
    assert result.exit_code == 0, result.output
    rows = loaded(result.output)
    assert [(a["id"], a["status"]) for a in rows] == [
        ("apr_send", "pending"),
        ("apr_bare", "pending"),
        ("apr_late", "pending"),
        ("apr_done", "rejected"),
        ("apr_gone", "timeout"),
        ("apr_live", "pending"),
        ("apr_halt", "pending"),
    ]
    assert all("answer" not in a for a in rows)
    rejected = loaded(corral(policy, "approvals", "ls", "--status", "rejected", "--json").output)
    assert [a["id"] for a in rejected] == ["apr_done"]


def test_approvals_ls_refuses_an_unknown_status(policy: Path) -> None:
    result = corral(policy, "approvals", "ls", "--status", "waiting")
    assert result.exit_code == 2
    assert "'waiting' is not one of 'pending', 'approved'" in flat(result.output)


# --- approvals show ---------------------------------------------------------------


def test_approvals_show_is_a_readable_panel(policy: Path) -> None:
    on_store(policy, seed_live)
    result = corral(policy, "approvals", "show", "apr_live")
    assert result.exit_code == 0, result.output
    shown = flat(result.output)
    for expected in (
        "Approval apr_live",
        "status pending, 59m left (until",
        "tool send_email (irreversible, via sdk)",
        "agent support (operational)",
        "run r1, step 5",
        "task refund ticket 42",
        "reason the customer asked for a refund",
        "expected the customer is told",
        "rollback send a correction",
        'rule approvals[0]: tool == "send_email"',
        "on timeout cancel",
        "on reject replan",
        "run so far $0.0123, 4 steps, 2 tool calls, 1800 tokens",
        '"to": "ada@example.com"',
        '"body": "Your refund is on its way."',
        '"recipients": 1',
        "get_customer",
    ):
        assert expected in shown, expected


def test_approvals_show_of_a_decided_one_says_by_whom(policy: Path) -> None:
    on_store(policy, seed_live)
    shown = flat(corral(policy, "approvals", "show", "apr_done").output)
    assert "status rejected by bob at 2023-11-14 22:13:25 UTC" in shown
    assert "feedback not today" in shown
    late = flat(corral(policy, "approvals", "show", "apr_late").output)
    assert "pending, but timed out at 2023-11-14 22:13:30 UTC" in late


def test_approvals_show_json(policy: Path) -> None:
    on_store(policy, seed_live)
    result = corral(policy, "approvals", "show", "apr_done", "--json")
    assert result.exit_code == 0, result.output
    expected = on_store(policy, lambda s: review.show_approval(s, "apr_done"))
    assert loaded(result.output) == expected


def test_approvals_show_unknown_exits_1(policy: Path) -> None:
    result = corral(policy, "approvals", "show", "apr_ghost")
    assert result.exit_code == 1
    assert flat(result.output) == (
        "error: no approval 'apr_ghost' in the store"
        " (list them with `corral approvals ls --status all`)"
    )


# --- approvals approve / reject ---------------------------------------------------


def test_approve_decides_as_the_named_reviewer_and_audits(policy: Path) -> None:
    on_store(policy, seed_live)
    result = corral(policy, "approvals", "approve", "apr_live", "--note", "fine", "--by", "alice")
    assert result.exit_code == 0, result.output
    assert result.output == "approved apr_live as alice: send_email runs as asked\n"
    stored = on_store(policy, lambda s: s.get_approval("apr_live"))
    assert stored is not None
    assert (stored.status, stored.decided_by, stored.note) == ("approved", "alice", "fine")
    assert audited(policy) == [
        (
            "approval.approved",
            "r1",
            {"id": "apr_live", "by": "alice", "note": "fine", "edited": False},
        )
    ]
    assert corral(policy, "audit", "verify").exit_code == 0


def test_approve_by_default_is_the_os_user(policy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_store(policy, seed_live)
    monkeypatch.setattr(getpass, "getuser", lambda: "ada")
    result = corral(policy, "approvals", "approve", "apr_live")
    assert result.exit_code == 0, result.output
    stored = on_store(policy, lambda s: s.get_approval("apr_live"))
    assert stored is not None and stored.decided_by == "ada"


def test_approve_with_edited_args(policy: Path) -> None:
    on_store(policy, seed_live)
    edited = {"to": "bob@example.com", "body": "Refund sent."}
    result = corral(
        policy, "approvals", "approve", "apr_live", "--args", orjson.dumps(edited).decode()
    )
    assert result.exit_code == 0, result.output
    assert "send_email runs with the edited args" in result.output
    stored = on_store(policy, lambda s: s.get_approval("apr_live"))
    assert stored is not None and (stored.approved_args, stored.args) == (edited, ARGS)
    [(_, _, payload)] = audited(policy)
    # The audit log is for reading: its copy is redacted (the example redacts storage).
    assert (payload["edited"], payload["args"]) == (True, {**edited, "to": "[EMAIL_ADDRESS]"})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ('{"to": ', "--args is not valid JSON ("),
        ("to=bob", "--args is not valid JSON ("),
        ("[1, 2]", "edited args for approval 'apr_live' must be a JSON object, got list"),
        ('{"to": 5}', "do not fit send_email's schema: at args.to: 5 is not of type 'string'"),
        ('{"body": "x"}', "at args: 'to' is a required property"),
    ],
)
def test_approve_refuses_bad_args_and_changes_nothing(
    policy: Path, args: str, message: str
) -> None:
    on_store(policy, seed_live)
    before = on_store(policy, snapshot)
    result = corral(policy, "approvals", "approve", "apr_live", "--args", args)
    assert result.exit_code == 1, result.output
    assert message in flat(result.output)
    assert on_store(policy, snapshot) == before


@pytest.mark.parametrize(
    ("verb", "approval_id", "message"),
    [
        ("approve", "apr_ghost", "no approval 'apr_ghost' in the store (list them with"),
        ("reject", "apr_ghost", "no approval 'apr_ghost' in the store (list them with"),
        ("approve", "apr_done", "approval 'apr_done' was already rejected by bob at 2023-11-14"),
        ("approve", "apr_gone", "approval 'apr_gone' already timed out, at 2023-11-14"),
        ("approve", "apr_late", "timed out at 2023-11-14 22:13:30 UTC: too late to approve it"),
        ("reject", "apr_done", "approval 'apr_done' was already rejected by bob"),
        ("reject", "apr_late", "too late to reject it"),
    ],
)
def test_a_decision_on_what_is_not_waiting_exits_1(
    policy: Path, verb: str, approval_id: str, message: str
) -> None:
    on_store(policy, seed_live)
    before = on_store(policy, snapshot)
    extra = ["--feedback", "no"] if verb == "reject" else []
    result = corral(policy, "approvals", verb, approval_id, *extra)
    assert result.exit_code == 1, result.output
    assert message in flat(result.output)
    assert on_store(policy, snapshot) == before


def test_reject_keeps_the_feedback_and_says_what_follows(policy: Path) -> None:
    on_store(policy, seed_live)
    result = corral(
        policy, "approvals", "reject", "apr_live", "--feedback", "ask first", "--by", "bob"
    )
    assert result.exit_code == 0, result.output
    assert result.output == (
        "rejected apr_live as bob: send_email does not run; the agent is given the feedback\n"
    )
    halted = corral(policy, "approvals", "reject", "apr_halt", "--feedback", "no", "--by", "bob")
    assert halted.output.endswith("send_email does not run; the run halts\n")
    stored = on_store(policy, lambda s: s.get_approval("apr_live"))
    assert stored is not None and (stored.status, stored.note) == ("rejected", "ask first")
    assert audited(policy)[0] == (
        "approval.rejected",
        "r1",
        {"id": "apr_live", "by": "bob", "feedback": "ask first"},
    )


def test_reject_needs_feedback(policy: Path) -> None:
    on_store(policy, seed_live)
    blank = corral(policy, "approvals", "reject", "apr_live", "--feedback", "  ")
    assert blank.exit_code == 1
    assert "rejecting approval 'apr_live' needs feedback" in flat(blank.output)
    missing = corral(policy, "approvals", "reject", "apr_live")
    assert missing.exit_code == 2
    assert "Missing option '--feedback'" in flat(missing.output)
    stored = on_store(policy, lambda s: s.get_approval("apr_live"))
    assert stored is not None and stored.status == "pending"


# --- shadow -----------------------------------------------------------------------


def test_shadow_ls_all_by_agent_and_as_json(policy: Path) -> None:
    assert corral(policy, "shadow", "ls").output == (
        "No proposals yet: runs in shadow mode record their writes here.\n"
    )
    on_store(policy, seed_live)
    result = corral(policy, "shadow", "ls")
    assert result.exit_code == 0, result.output
    fits(result.output)
    lines = [line.split() for line in result.output.splitlines() if "prp_" in line]
    assert [line[0] for line in lines] == ["prp_1", "prp_2", "prp_3", "prp_4", "prp_5"]
    assert lines[1][:5] == ["prp_2", "support", "refund", "disagree", "carol"]
    only = loaded(corral(policy, "shadow", "ls", "--agent", "analyzer", "--json").output)
    assert [(p["id"], p["tool"], p["verdict"]) for p in only] == [("prp_4", "sql_write", None)]


def test_shadow_review_once(policy: Path) -> None:
    on_store(policy, seed_live)
    result = corral(policy, "shadow", "review", "prp_1", "agree", "--note", "ok", "--by", "dave")
    assert result.exit_code == 0, result.output
    assert result.output == "dave agrees with proposal prp_1\n"
    assert audited(policy) == [
        ("shadow.reviewed", "r1", {"id": "prp_1", "by": "dave", "verdict": "agree", "note": "ok"})
    ]
    again = corral(policy, "shadow", "review", "prp_1", "disagree", "--by", "erin")
    assert again.exit_code == 1
    assert "proposal 'prp_1' was already reviewed: dave said agree at" in flat(again.output)
    unknown = corral(policy, "shadow", "review", "prp_ghost", "agree")
    assert unknown.exit_code == 1
    assert flat(unknown.output) == (
        "error: no proposal 'prp_ghost' in the store (list them with `corral shadow ls`)"
    )
    assert corral(policy, "shadow", "review", "prp_3", "maybe").exit_code == 2


def test_shadow_report_table_and_json(policy: Path) -> None:
    on_store(policy, seed_live)
    corral(policy, "shadow", "review", "prp_1", "agree")
    result = corral(policy, "shadow", "report")
    assert result.exit_code == 0, result.output
    fits(result.output)
    rows = [line.split() for line in result.output.splitlines() if "support" in line]
    assert rows == [
        ["support", "refund", "3", "2", "1", "1", "50%"],
        ["support", "send_email", "1", "0", "0", "0", "-"],
    ]
    report = loaded(corral(policy, "shadow", "report", "--agent", "support", "--json").output)
    assert [(r["tool"], r["agreement"]) for r in report] == [("refund", 0.5), ("send_email", None)]
