"""`corral approvals` and `corral shadow`: the reviewer's verbs, over corral.runtime.review.

A refusal exits 1 with its message, a bad argument too: edited arguments are refused for
what the approval holds (its tool's schema), not for how the command was typed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import orjson
import typer
from rich.json import JSON
from rich.table import Table

from corral.cli_common import AsJson, PolicyPath, fail, out, print_json, when, with_store
from corral.runtime import review
from corral.runtime.operations import InvalidArgument, NotFound, UnknownRun
from corral.state import Store
from corral.tables import listing
from corral.telemetry.audit import AuditLog

T = TypeVar("T")

approvals_app = typer.Typer(
    help="Tool calls waiting for a human: list, inspect, approve or reject them.",
    no_args_is_help=True,
)
shadow_app = typer.Typer(
    help="Shadow mode: the writes agents proposed instead of making, and reviewers' verdicts.",
    no_args_is_help=True,
)

ApprovalId = Annotated[
    str,
    typer.Argument(
        metavar="ID", help="The approval's id (see `corral approvals ls`).", show_default=False
    ),
]
ProposalId = Annotated[
    str,
    typer.Argument(
        metavar="ID", help="The proposal's id (see `corral shadow ls`).", show_default=False
    ),
]
By = Annotated[
    str | None,
    typer.Option(
        "--by", metavar="NAME", help="Who decides, for the audit log (default: the OS user)."
    ),
]
Agent = Annotated[str | None, typer.Option(metavar="NAME", help="Only this agent's proposals.")]


def reviewing(
    policy: Path, work: Callable[[Store], Awaitable[T]], *, listed_by: str | None = None
) -> T:
    """with_store, but a refused argument exits 1 like the other refusals, and an id that
    is not in the store says which verb lists the ones that are (`listed_by`)."""

    async def guarded(store: Store) -> T:
        try:
            return await work(store)
        except InvalidArgument as exc:
            fail(str(exc))
        except NotFound as exc:
            if listed_by is None or isinstance(exc, UnknownRun):
                raise
            fail(f"{exc} (list them with `{listed_by}`)")

    return with_store(policy, guarded)


LIST_APPROVALS = "corral approvals ls --status all"


def left(seconds: float) -> str:
    """Time left, to the minute past one: 45s, 12m, 3h05m, 2d4h."""
    if seconds <= 0:
        return "none"
    minutes = int(seconds // 60)
    if minutes == 0:
        return f"{int(seconds)}s"
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


# --- approvals --------------------------------------------------------------------


@approvals_app.command("ls")
def approvals_ls(
    policy: PolicyPath = Path("corral.yaml"),
    status: Annotated[
        review.ApprovalFilter, typer.Option(help="Only approvals with this status.")
    ] = "pending",
    as_json: AsJson = False,
) -> None:
    """List approvals, oldest request first (`corral approvals show ID` prints one)."""
    rows = reviewing(policy, lambda s: review.list_approvals(s, status=status))
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("No approvals yet." if status == "all" else f"No {status} approvals.")
        return
    now = time.time()
    columns = ("approval", "agent", "tool", "task", "status", "left")
    lines = [
        (
            a["id"],
            a["agent"] or "-",
            a["tool"],
            (a["panel"] or {}).get("task") or "-",
            a["status"],
            left(a["timeout_at"] - now) if a["status"] == "pending" else "-",
        )
        for a in rows
    ]
    table = listing(
        "Approvals", columns, lines, out.width, ids=("approval",), text="task", droppable=("agent",)
    )
    out.print(table)


def _shown(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _decision(approval: Mapping[str, Any], now: float) -> str:
    status = approval["status"]
    if status == "pending":
        until = f"{when(approval['timeout_at'])} UTC"
        remaining = approval["timeout_at"] - now
        if remaining <= 0:
            return f"pending, but timed out at {until}: its on_timeout applies"
        return f"pending, {left(remaining)} left (until {until})"
    if status == "timeout":
        return f"timed out at {when(approval['decided_at'])} UTC"
    by = approval["decided_by"] or "unknown"
    return f"{status} by {by} at {when(approval['decided_at'])} UTC"


def _details(approval: Mapping[str, Any], now: float) -> Table:
    """The panel's facts, one per line: what is asked, why, under which rule, so far."""
    panel: Mapping[str, Any] = approval["panel"] or {}
    rule = panel.get("rule") or {}
    run = panel.get("run") or {}
    details = Table.grid(padding=(0, 2))
    rows = [
        ("status", _decision(approval, now)),
        (
            "tool",
            f"{approval['tool']} ({_shown(panel.get('scope'))}, via {_shown(panel.get('door'))})",
        ),
        ("agent", f"{approval['agent'] or '-'} ({_shown(panel.get('agent_type'))})"),
        ("run", f"{approval['run_id']}, step {approval['step']}"),
        ("session", _shown(panel.get("session"))),
        ("task", _shown(panel.get("task"))),
        ("reason", _shown(panel.get("reason"))),
        ("expected", _shown(panel.get("expected"))),
        ("rollback", _shown(panel.get("rollback"))),
        ("rule", f"{_shown(rule.get('source'))}: {rule.get('when') or approval['rule']}"),
        ("on timeout", _on_timeout(panel)),
        ("on reject", _shown(panel.get("on_reject"))),
        (
            "run so far",
            f"${run.get('cost_usd', 0):.4f}, {run.get('steps', 0)} steps,"
            f" {run.get('tool_calls', 0)} tool calls, {run.get('tokens', 0)} tokens",
        ),
    ]
    if approval["escalations"]:
        rows.append(("escalated", f"{approval['escalations']} time(s)"))
    if approval["note"]:
        rows.append(("feedback" if approval["status"] == "rejected" else "note", approval["note"]))
    for name, value in rows:
        details.add_row(name, value)
    return details


def _on_timeout(panel: Mapping[str, Any]) -> str:
    action = _shown(panel.get("on_timeout"))
    if panel.get("fallback_tool"):
        return f"{action} to {panel['fallback_tool']}"
    if panel.get("escalate_to"):
        return f"{action} to {panel['escalate_to']}"
    return action


def _last_steps(steps: list[Mapping[str, Any]]) -> Table:
    table = Table(title="Last steps")
    for column in ("#", "kind", "name", "status"):
        table.add_column(column)
    for step in steps:
        table.add_row(str(step["seq"]), step["kind"], step["name"], step["status"])
    return table


@approvals_app.command("show")
def approvals_show(
    approval_id: ApprovalId, policy: PolicyPath = Path("corral.yaml"), as_json: AsJson = False
) -> None:
    """Show what an approval asks, to decide it.

    The tool and its full arguments, the agent's reason, the rule that stopped the call,
    the run so far, its last steps and the time left."""
    approval = reviewing(
        policy, lambda s: review.show_approval(s, approval_id), listed_by=LIST_APPROVALS
    )
    if as_json:
        print_json(approval)
        return
    panel: Mapping[str, Any] = approval["panel"] or {}
    out.print(f"Approval {approval['id']}", style="bold", highlight=False)
    out.print(_details(approval, time.time()))
    out.print("args:")
    out.print(JSON.from_data(approval["args"]))
    if approval["approved_args"] is not None:
        out.print("approved with edited args:")
        out.print(JSON.from_data(approval["approved_args"]))
    if panel.get("preview") is not None:
        out.print("preview:")
        out.print(JSON.from_data(panel["preview"]))
    if panel.get("last_steps"):
        out.print(_last_steps(panel["last_steps"]))


def _edited(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        fail(f"--args is not valid JSON ({exc}): give the tool's arguments as a JSON object")


@approvals_app.command("approve")
def approvals_approve(
    approval_id: ApprovalId,
    policy: PolicyPath = Path("corral.yaml"),
    note: Annotated[
        str | None, typer.Option(metavar="TEXT", help="A note for the audit log.")
    ] = None,
    args: Annotated[
        str | None,
        typer.Option(
            "--args",
            metavar="JSON",
            help="Run with these arguments instead (a JSON object, checked against the "
            "tool's schema).",
        ),
    ] = None,
    by: By = None,
) -> None:
    """Let the waiting call run, as asked or with edited arguments."""
    edited = _edited(args)
    who = by or review.default_reviewer()
    decided = reviewing(
        policy,
        lambda s: review.approve(
            s, AuditLog(s), approval_id, by=who, now=time.time(), note=note, args=edited
        ),
        listed_by=LIST_APPROVALS,
    )
    how = "with the edited args" if edited is not None else "as asked"
    out.print(
        f"approved {approval_id} as {who}: {decided['tool']} runs {how}",
        highlight=False,
        soft_wrap=True,
    )


@approvals_app.command("reject")
def approvals_reject(
    approval_id: ApprovalId,
    feedback: Annotated[
        str,
        typer.Option(
            metavar="TEXT",
            help="Why, and what the agent should do instead (it is told).",
            show_default=False,
        ),
    ],
    policy: PolicyPath = Path("corral.yaml"),
    by: By = None,
) -> None:
    """Refuse the waiting call; the agent is given the feedback."""
    who = by or review.default_reviewer()
    decided = reviewing(
        policy,
        lambda s: review.reject(
            s, AuditLog(s), approval_id, by=who, now=time.time(), feedback=feedback
        ),
        listed_by=LIST_APPROVALS,
    )
    on_reject = (decided["panel"] or {}).get("on_reject")
    then = "the run halts" if on_reject == "halt" else "the agent is given the feedback"
    out.print(
        f"rejected {approval_id} as {who}: {decided['tool']} does not run; {then}",
        highlight=False,
        soft_wrap=True,
    )


# --- shadow -----------------------------------------------------------------------

NO_PROPOSALS = "No proposals yet: runs in shadow mode record their writes here."


@shadow_app.command("ls")
def shadow_ls(
    policy: PolicyPath = Path("corral.yaml"), agent: Agent = None, as_json: AsJson = False
) -> None:
    """List the proposals of runs in shadow mode, oldest first."""
    rows = reviewing(policy, lambda s: review.list_proposals(s, agent=agent))
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print(NO_PROPOSALS)
        return
    columns = ("proposal", "agent", "tool", "verdict", "by", "proposed")
    lines = [
        (
            p["id"],
            p["agent"],
            p["tool"],
            p["verdict"] or "-",
            p["reviewed_by"] or "-",
            when(p["proposed_at"], short=True),
        )
        for p in rows
    ]
    out.print(listing("Proposals", columns, lines, out.width, ids=("proposal",)))


@shadow_app.command("review")
def shadow_review(
    proposal_id: ProposalId,
    verdict: Annotated[
        Literal["agree", "disagree"],
        typer.Argument(help="Whether the write proposed is what should have happened."),
    ],
    policy: PolicyPath = Path("corral.yaml"),
    note: Annotated[str | None, typer.Option(metavar="TEXT", help="Why, for the record.")] = None,
    by: By = None,
) -> None:
    """Give a proposal its verdict (once: the first verdict counts)."""
    who = by or review.default_reviewer()
    reviewing(
        policy,
        lambda s: review.review_proposal(
            s, AuditLog(s), proposal_id, verdict, by=who, now=time.time(), note=note
        ),
        listed_by="corral shadow ls",
    )
    out.print(f"{who} {verdict}s with proposal {proposal_id}", highlight=False, soft_wrap=True)


@shadow_app.command("report")
def shadow_report(
    policy: PolicyPath = Path("corral.yaml"), agent: Agent = None, as_json: AsJson = False
) -> None:
    """How often reviewers agreed with each agent's proposals, per tool."""
    rows = reviewing(policy, lambda s: review.shadow_report(s, agent=agent))
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print(NO_PROPOSALS)
        return
    columns = ("agent", "tool", "total", "reviewed", "agree", "disagree", "rate")
    lines = [
        (
            r["agent"],
            r["tool"],
            str(r["proposals"]),
            str(r["reviewed"]),
            str(r["agree"]),
            str(r["disagree"]),
            "-" if r["agreement"] is None else f"{r['agreement']:.0%}",
        )
        for r in rows
    ]
    out.print(listing("Shadow agreement", columns, lines, out.width))
