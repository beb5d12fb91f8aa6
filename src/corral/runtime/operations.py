"""What an operator does to a deployment: list, inspect and kill runs, settle dead letters,
read the breakers and verify the audit chain.

The CLI and the gateway's admin API are two front doors to these actions. Each action
lives here once, so the two cannot drift: it takes what it touches (the store, the audit
log, the counters) and the time from its caller, returns JSON-ready dicts and lists, and
refuses with

- NotFound (a LookupError) for a run that has no dead letter, and its subclass
  UnknownRun for a run id that is not in the store at all;
- StateConflict (a ValueError) for a run or dead letter in the wrong state for the action;
- InvalidArgument (a ValueError) for a bad argument;

each with a message that names the run and what is wrong, fit to show as it is. A
refused action writes nothing.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, Literal, cast, get_args

from corral.calls import HaltReason, RunStatus
from corral.gates.breaker import breaker_report
from corral.policy import parse_duration
from corral.runtime.recovery import (
    HOST,
    LEASE_TTL_SECONDS,
    find_dead,
    new_owner,
    settle_orphan,
)
from corral.state import (
    ConstraintError,
    Counters,
    DeadLetterRecord,
    DeadLetterStatus,
    LeaseRecord,
    NotFoundError,
    RunRecord,
    StepRecord,
    Store,
)
from corral.state.records import TOPUP_KEYS
from corral.state.store import add_topup
from corral.telemetry.audit import AuditLog

# What a dead-letter listing filters on: one dead-letter status, or all of them.
DeadLetterFilter = Literal["open", "retried", "dropped", "all"]
DEAD_LETTER_FILTERS: tuple[str, ...] = get_args(DeadLetterFilter)
RUN_STATUSES: tuple[str, ...] = tuple(status.value for status in RunStatus)
# A retry's top-up options as the CLI's flags and the admin API's body name them: one per
# budget the store can top up.
TOPUP_OPTIONS: tuple[str, ...] = tuple(f"add_{key}" for key in TOPUP_KEYS)


class NotFound(LookupError):
    """What the action is about does not exist."""


class UnknownRun(NotFound):
    """No run with that id is in the store."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run '{run_id}' in the store")
        self.run_id = run_id


class StateConflict(ValueError):
    """The run or dead letter exists, but its state does not allow the action."""


class InvalidArgument(ValueError):
    """An argument the action cannot take, named in the message."""


# --- records as JSON ------------------------------------------------------------


def run_json(run: RunRecord) -> dict[str, Any]:
    return {name: getattr(run, name) for name in run.__dataclass_fields__}


def step_json(step: StepRecord) -> dict[str, Any]:
    return {name: getattr(step, name) for name in step.__dataclass_fields__}


def dead_letter_json(dead: DeadLetterRecord, *, packet: bool) -> dict[str, Any]:
    """The dead letter's fields; its packet (which can be large) only if asked for."""
    return {
        name: getattr(dead, name)
        for name in dead.__dataclass_fields__
        if packet or name != "packet"
    }


# --- arguments ------------------------------------------------------------------


def parse_usd(value: object) -> float:
    """0.2 or '0.20' -> 0.2. A negative, infinite, non-numeric or boolean amount is refused."""
    amount = math.nan  # refused below unless the value reads as a number
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            amount = float(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        amount = float(value)
    if not math.isfinite(amount) or amount < 0:
        raise InvalidArgument(f"expected a non-negative amount in USD like 0.20, got {value!r}")
    return amount


def parse_count(value: object) -> int:
    """A non-negative whole number; a bool (which Python counts as an int) is refused."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"expected a non-negative whole number, got {value!r}")
    return value


# How each top-up option's value is read: USD as for the CLI's --add-usd, the wall clock
# as a duration with its unit (as the policy writes them: a bare 10 could mean seconds or
# minutes), the rest as counts.
_TOPUP_PARSERS: Mapping[str, Callable[[object], float]] = {
    "usd": parse_usd,
    "tokens": parse_count,
    "tool_calls": parse_count,
    "steps": parse_count,
    "wall_clock": parse_duration,
}


def topup_from(options: Mapping[str, object]) -> dict[str, float]:
    """The top-up that retry options ask for, keyed as the store keeps it:
    {"add_usd": 0.2, "add_wall_clock": "10m"} -> {"usd": 0.2, "wall_clock": 600.0}.

    An option given as None is left out. InvalidArgument naming the option if it is not
    one of TOPUP_OPTIONS or its value does not parse.
    """
    unknown = [option for option in options if option not in TOPUP_OPTIONS]
    if unknown:
        raise InvalidArgument(
            f"unknown top-up option {unknown[0]!r}: expected {', '.join(TOPUP_OPTIONS)}"
        )
    topup: dict[str, float] = {}
    for key in TOPUP_KEYS:  # the store's order, so equal top-ups read the same everywhere
        value = options.get(f"add_{key}")
        if value is None:
            continue
        try:
            topup[key] = _TOPUP_PARSERS[key](value)
        except ValueError as exc:
            raise InvalidArgument(f"add_{key}: {exc}") from None
    return topup


# --- runs -----------------------------------------------------------------------


async def _existing_run(store: Store, run_id: str) -> RunRecord:
    """The run, or UnknownRun."""
    run = await store.get_run(run_id)
    if run is None:
        raise UnknownRun(run_id)
    return run


async def list_runs(
    store: Store,
    *,
    limit: int = 50,
    status: str | None = None,
    agent: str | None = None,
    session: str | None = None,
) -> list[dict[str, Any]]:
    """The newest `limit` runs, newest first, of one status, agent or session if given."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidArgument(f"limit must be a whole number of at least 1, got {limit!r}")
    if status is not None and status not in RUN_STATUSES:
        raise InvalidArgument(f"status must be one of {', '.join(RUN_STATUSES)}, got {status!r}")
    rows = await store.list_runs(
        limit=limit,
        status=None if status is None else RunStatus(status),
        agent=agent,
        session=session,
    )
    return [run_json(run) for run in rows]


async def show_run(store: Store, run_id: str) -> dict[str, Any]:
    """{"run": the run's fields, "steps": its steps by seq}. Kept apart because the run's
    own "steps" field is its step count."""
    run = await _existing_run(store, run_id)
    steps = await store.list_steps(run_id)
    return {"run": run_json(run), "steps": [step_json(step) for step in steps]}


async def kill_run(
    store: Store, audit: AuditLog, run_id: str, *, now: float, lease_ttl: float = LEASE_TTL_SECONDS
) -> dict[str, Any]:
    """Halt a running run with 'killed', from any process.

    The supervisor serving the run polls the store for kill requests, so marking the run
    is all it takes while one does: it halts at its next gate. A run no live process
    serves (its process died, or it waits to be resumed) is halted here at once, its calls
    in flight charged at their worst case. Of several requests the store keeps the first
    one's time (what time-to-safe-fail is measured from); each is audited with its own.
    "halted" in the answer says whether the run is halted already.
    """
    if not await store.request_kill(run_id, now):
        # The store refuses unknown and ended runs alike; the run tells which.
        run = await _existing_run(store, run_id)
        raise StateConflict(
            f"run '{run_id}' is {run.status}, not running: only a running run can be killed"
        )
    await audit.append("run.kill_requested", {"requested_at": now}, run_id)
    dead = await find_dead(store, now, lease_ttl)
    # Leased while it settles, so nobody takes this process for gone meanwhile.
    owner = new_owner("kill")
    await store.renew_lease(LeaseRecord(owner, HOST, os.getpid(), now, now))
    try:
        halted = await settle_orphan(
            store, audit, run_id, owner, dead, now=now, halt=HaltReason.KILLED, unowned=True
        )
    finally:
        await store.drop_leases([owner])
    return {"run_id": run_id, "requested_at": now, "halted": halted is not None}


# --- dead letters ---------------------------------------------------------------


async def list_dead_letters(store: Store, *, status: str = "open") -> list[dict[str, Any]]:
    """Dead letters of one status (or "all"), oldest first, without their packets."""
    if status not in DEAD_LETTER_FILTERS:
        raise InvalidArgument(
            f"status must be one of {', '.join(DEAD_LETTER_FILTERS)}, got {status!r}"
        )
    wanted = cast("DeadLetterStatus | None", None if status == "all" else status)
    rows = await store.list_dead_letters(status=wanted)
    return [dead_letter_json(dead, packet=False) for dead in rows]


async def _newest_dead_letter(store: Store, run_id: str, purpose: str) -> DeadLetterRecord:
    """The run's newest dead letter, or an error that says whether the run exists at all
    (`purpose`, e.g. " to drop", ends the message's "has no dead letter")."""
    dead = await store.dead_letter_for_run(run_id)
    if dead is None:
        run = await _existing_run(store, run_id)
        raise NotFound(f"run '{run_id}' has no dead letter{purpose} (it is {run.status})")
    return dead


async def show_dead_letter(store: Store, run_id: str) -> dict[str, Any]:
    """The run's newest dead letter, whatever its status, with its escalation packet."""
    return dead_letter_json(await _newest_dead_letter(store, run_id, ""), packet=True)


async def retry_dead_letter(
    store: Store,
    audit: AuditLog,
    run_id: str,
    *,
    topup: Mapping[str, float],
    now: float,
) -> dict[str, Any]:
    """Reopen a halted run with `topup` (keyed as TOPUP_KEYS, see topup_from) added to its
    budgets, settling its dead letter as retried; the SDK then resumes it.

    Only a halted run whose newest dead letter was not dropped can be retried: a drop is
    an operator's decision that the run stays halted.
    """
    try:  # a bad top-up is refused before the run's state is looked at
        add_topup(None, topup)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    run = await _existing_run(store, run_id)
    if run.status != RunStatus.HALTED:
        raise StateConflict(
            f"run '{run_id}' is {run.status}, not halted: only a halted run can be retried"
        )
    dead = await store.dead_letter_for_run(run_id)
    if dead is None:
        raise NotFound(f"run '{run_id}' is halted but has no dead letter to retry")
    if dead.status == "dropped":
        raise StateConflict(
            f"run '{run_id}' was dropped from the dead-letter queue (dead letter {dead.id})"
        )
    try:
        reopened = await store.reopen_run(run_id, topup=topup, at=now)
    except NotFoundError:
        raise UnknownRun(run_id) from None
    except ConstraintError as exc:  # another operator settled it since it was read
        raise StateConflict(f"run '{run_id}' cannot be retried: {exc}") from None
    await audit.append("dlq.retry", {"topup": dict(topup), "dead_letter": dead.id}, run_id)
    return {
        "run_id": run_id,
        "dead_letter_id": dead.id,
        "topup": dict(topup),
        "run": run_json(reopened),
    }


async def drop_dead_letter(store: Store, audit: AuditLog, run_id: str) -> dict[str, Any]:
    """Settle the run's open dead letter as dropped: nobody will retry it, the run stays
    halted."""
    dead = await _newest_dead_letter(store, run_id, " to drop")
    if not await store.set_dead_letter_status(dead.id, "dropped", only_if="open"):
        # Read again: a racing operator may have settled it after it was read above.
        now_settled = await store.get_dead_letter(dead.id)
        status = dead.status if now_settled is None else now_settled.status
        raise StateConflict(
            f"run '{run_id}' has nothing open to drop:"
            f" its dead letter {dead.id} was already {status}"
        )
    await audit.append("dlq.drop", {"dead_letter": dead.id}, run_id)
    return {"run_id": run_id, "dead_letter_id": dead.id, "status": "dropped"}


# --- breakers and audit ---------------------------------------------------------


async def list_breakers(counters: Counters, *, now: float) -> list[dict[str, Any]]:
    """Every circuit breaker the counters hold, by key. Breakers live where their counters
    do: in-process counters hold only the breakers of the process that owns them."""
    return await breaker_report(counters, now)


async def verify_audit(audit: AuditLog) -> dict[str, Any]:
    """{"ok": True, "entries": n} for an intact chain; for a broken one "ok" is False,
    "entries" counts the intact entries before the break, "broken_at" is the first broken
    entry's position (1-based) and "reason" says what is wrong with it."""
    result = await audit.verify()
    if result.ok:
        return {"ok": True, "entries": result.count}
    return {
        "ok": False,
        "entries": result.count,
        "broken_at": result.broken_at,
        "reason": result.reason,
    }
