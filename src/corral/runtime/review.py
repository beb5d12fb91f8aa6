"""What a reviewer does: decide the tool calls waiting for a human, and judge the writes
runs in shadow mode proposed instead of making.

Like corral.runtime.operations (whose NotFound, StateConflict and InvalidArgument these
actions raise), each action lives here once for the CLI and the admin API: it takes the
store, the audit log and the time from its caller and returns JSON-ready dicts. A
refused action writes nothing.

A decision is the store's atomic check-and-set, so of two reviewers racing on one
approval (or a reviewer and the timeout) exactly one decides it; the other is told who
did, and when.
"""

from __future__ import annotations

import datetime as dt
import getpass
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal, cast, get_args

from jsonschema import Draft202012Validator, SchemaError
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.validators import validator_for

from corral.runtime.operations import InvalidArgument, NotFound, StateConflict
from corral.state import ApprovalRecord, ApprovalStatus, ProposalRecord, Store, Verdict
from corral.telemetry.audit import AuditLog

# What an approval listing filters on: one approval status, or all of them.
ApprovalFilter = Literal["pending", "approved", "rejected", "timeout", "all"]
APPROVAL_FILTERS: tuple[str, ...] = get_args(ApprovalFilter)
VERDICTS: tuple[str, ...] = get_args(Verdict)

OnDecided = Callable[[str], None]


# --- records as JSON ------------------------------------------------------------


def approval_json(record: ApprovalRecord) -> dict[str, Any]:
    """The approval's fields but `answer`: that is the gateway's held model answer, kept
    to resend and possibly large, and nothing a reviewer decides on."""
    return {name: getattr(record, name) for name in record.__dataclass_fields__ if name != "answer"}


def proposal_json(record: ProposalRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


def default_reviewer() -> str:
    """Who decides when nobody says: the OS user, as the audit log should name someone."""
    try:
        return getpass.getuser() or "unknown"
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return "unknown"


def _at(ts: float | None) -> str:
    if ts is None:  # a record decided by hand in the database, without a time
        return "an unknown time"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- approvals ------------------------------------------------------------------


async def list_approvals(store: Store, *, status: str = "pending") -> list[dict[str, Any]]:
    """Approvals of one status (or "all"), oldest request first."""
    if status not in APPROVAL_FILTERS:
        raise InvalidArgument(
            f"status must be one of {', '.join(APPROVAL_FILTERS)}, got {status!r}"
        )
    wanted = cast("ApprovalStatus | None", None if status == "all" else status)
    return [approval_json(record) for record in await store.list_approvals(status=wanted)]


async def _existing_approval(store: Store, approval_id: str) -> ApprovalRecord:
    record = await store.get_approval(approval_id)
    if record is None:
        raise NotFound(f"no approval '{approval_id}' in the store")
    return record


async def show_approval(store: Store, approval_id: str) -> dict[str, Any]:
    return approval_json(await _existing_approval(store, approval_id))


def _decided(record: ApprovalRecord) -> str:
    """Why the approval cannot be decided again: how it was decided, by whom and when."""
    at = _at(record.decided_at)
    if record.status == "timeout":
        return f"approval '{record.id}' already timed out, at {at}"
    by = f" by {record.decided_by}" if record.decided_by else ""
    return f"approval '{record.id}' was already {record.status}{by} at {at}"


async def _pending(store: Store, approval_id: str, verb: str, now: float) -> ApprovalRecord:
    """The approval, if it still waits for a decision and its time is not up."""
    record = await _existing_approval(store, approval_id)
    if record.status != "pending":
        raise StateConflict(_decided(record))
    if now >= record.timeout_at:
        # The waiting call applies its on_timeout now; a late decision must not race it.
        raise StateConflict(
            f"approval '{approval_id}' timed out at {_at(record.timeout_at)}: too late to {verb} it"
        )
    return record


def _checked_args(record: ApprovalRecord, args: Any) -> None:
    """Refuse edited arguments that are not an object or do not fit the tool's schema,
    naming the first field that fails."""
    where = f"edited args for approval '{record.id}'"
    if not isinstance(args, dict):
        raise InvalidArgument(f"{where} must be a JSON object, got {type(args).__name__}")
    panel = record.panel if isinstance(record.panel, dict) else {}
    schema = panel.get("schema")
    if schema is None:
        raise InvalidArgument(
            f"{where} are refused: the schema of {record.tool}'s arguments is unknown,"
            " so there is nothing to check them against"
        )
    validator = validator_for(schema, default=Draft202012Validator)
    try:
        validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidArgument(
            f"{where} cannot be checked: {record.tool}'s argument schema is invalid: {exc.message}"
        ) from None
    failed: ValidationError | None = best_match(validator(schema).iter_errors(args))
    if failed is not None:
        field = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in failed.absolute_path
        )
        raise InvalidArgument(
            f"{where} do not fit {record.tool}'s schema: at args{field}: {failed.message}"
        )


async def _decide(
    store: Store,
    record: ApprovalRecord,
    status: ApprovalStatus,
    *,
    by: str,
    now: float,
    note: str | None,
    args: Any = None,
) -> ApprovalRecord:
    """Decide the approval read as pending, or StateConflict if someone decided first."""
    if not await store.decide_approval(record.id, status, by=by, at=now, note=note, args=args):
        # Decided (or timed out) since it was read: say how, and by whom.
        now_decided = await store.get_approval(record.id)
        assert now_decided is not None  # approvals are never deleted
        raise StateConflict(_decided(now_decided))
    return replace(
        record, status=status, decided_at=now, decided_by=by, note=note, approved_args=args
    )


async def approve(
    store: Store,
    audit: AuditLog,
    approval_id: str,
    *,
    by: str,
    now: float,
    note: str | None = None,
    args: Any = None,
    on_decided: OnDecided | None = None,
) -> dict[str, Any]:
    """Let the waiting call run; with `args` (checked against the tool's schema) it runs
    with those arguments instead of the ones it asked for. `on_decided` is told the id
    once the decision is stored, to wake a caller waiting in this process."""
    record = await _pending(store, approval_id, "approve", now)
    if args is not None:
        _checked_args(record, args)
    decided = await _decide(store, record, "approved", by=by, now=now, note=note, args=args)
    payload: dict[str, Any] = {"id": approval_id, "by": by, "note": note}
    payload["edited"] = args is not None
    if args is not None:
        payload["args"] = args
    await audit.append("approval.approved", payload, record.run_id)
    if on_decided is not None:
        on_decided(approval_id)
    return approval_json(decided)


async def reject(
    store: Store,
    audit: AuditLog,
    approval_id: str,
    *,
    by: str,
    now: float,
    feedback: str,
    on_decided: OnDecided | None = None,
) -> dict[str, Any]:
    """Refuse the waiting call. `feedback` is required: the agent is told it, to plan
    something else (or the run halts, as the rule's on_reject says)."""
    if not feedback.strip():
        raise InvalidArgument(
            f"rejecting approval '{approval_id}' needs feedback: say why, and what the agent"
            " should do instead"
        )
    record = await _pending(store, approval_id, "reject", now)
    decided = await _decide(store, record, "rejected", by=by, now=now, note=feedback)
    payload = {"id": approval_id, "by": by, "feedback": feedback}
    await audit.append("approval.rejected", payload, record.run_id)
    if on_decided is not None:
        on_decided(approval_id)
    return approval_json(decided)


# --- shadow proposals -------------------------------------------------------------


async def list_proposals(store: Store, *, agent: str | None = None) -> list[dict[str, Any]]:
    """Proposals, of one agent if given, oldest first, reviewed or not."""
    return [proposal_json(record) for record in await store.list_proposals(agent=agent)]


def _reviewed(record: ProposalRecord) -> str:
    return (
        f"proposal '{record.id}' was already reviewed: {record.reviewed_by} said"
        f" {record.verdict} at {_at(record.reviewed_at)}"
    )


async def review_proposal(
    store: Store,
    audit: AuditLog,
    proposal_id: str,
    verdict: str,
    *,
    by: str,
    now: float,
    note: str | None = None,
) -> dict[str, Any]:
    """Say whether the write proposed is what should have happened. One verdict per
    proposal, the first: the report counts each proposal once."""
    if verdict not in VERDICTS:
        raise InvalidArgument(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    said = cast("Verdict", verdict)
    record = await store.get_proposal(proposal_id)
    if record is None:
        raise NotFound(f"no proposal '{proposal_id}' in the store")
    if record.verdict is not None:
        raise StateConflict(_reviewed(record))
    if not await store.review_proposal(proposal_id, said, by=by, at=now, note=note):
        # Reviewed by someone else since it was read.
        now_reviewed = await store.get_proposal(proposal_id)
        assert now_reviewed is not None  # proposals are never deleted
        raise StateConflict(_reviewed(now_reviewed))
    payload = {"id": proposal_id, "by": by, "verdict": verdict, "note": note}
    await audit.append("shadow.reviewed", payload, record.run_id)
    reviewed = replace(record, verdict=said, reviewed_by=by, reviewed_at=now, note=note)
    return proposal_json(reviewed)


async def shadow_report(store: Store, *, agent: str | None = None) -> list[dict[str, Any]]:
    """How often reviewers agreed with each agent's proposals, per tool: the figures to
    decide on taking an agent out of shadow mode. `agreement` is agree / reviewed, None
    while nothing is reviewed. Sorted by agent, then tool."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for proposal in await store.list_proposals(agent=agent):
        row = rows.setdefault(
            (proposal.agent, proposal.tool),
            {
                "agent": proposal.agent,
                "tool": proposal.tool,
                "proposals": 0,
                "reviewed": 0,
                "agree": 0,
                "disagree": 0,
            },
        )
        row["proposals"] += 1
        if proposal.verdict is not None:
            row["reviewed"] += 1
            row[proposal.verdict] += 1
    report = [rows[key] for key in sorted(rows)]
    for row in report:
        row["agreement"] = row["agree"] / row["reviewed"] if row["reviewed"] else None
    return report
