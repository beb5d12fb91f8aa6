"""Recovery: what a process that died mid-call left behind, settled from the store.

Each process serving runs holds a lease (a row it renews while it has runs open) and
owns the runs it serves. Before a call goes upstream its worst case is written ahead
(an InflightRecord); the call's step deletes it. A process is gone when its lease is
stale, or it ran on this host and its pid no longer exists (so a kill -9 is seen at
once on one machine). Its runs are then claimed by one survivor, atomically, which
charges every call still in flight at its worst case as an `interrupted` step, and
either halts the run (a run of one request, which nobody resumes, halts with
`interrupted`; a run an operator asked to kill halts with `killed`) or leaves it
running and unowned, for `Supervisor.resume` or the gateway's next request to pick up.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Collection, Iterable
from dataclasses import replace

from corral.calls import Halt, HaltReason, RunStatus
from corral.gates.record import view_of
from corral.runtime.packet import packet_for
from corral.state import LeaseRecord, RunRecord, StepRecord, Store
from corral.telemetry.audit import AuditLog

# A live process renews its lease this often; one not renewed for LEASE_TTL is gone.
LEASE_RENEW_SECONDS = 5.0
LEASE_TTL_SECONDS = 30.0
HOST = socket.gethostname()
INTERRUPTED_ERROR = "the process serving the call died mid-call; its worst case was charged"
# Steps the packet of a run halted by recovery shows, as a live run's packet does.
PACKET_STEPS = 10


def new_owner(kind: str = "proc") -> str:
    """A lease id, unique to this process and call: host, pid and a random tag."""
    return f"{kind}:{HOST}:{os.getpid()}:{secrets.token_hex(4)}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def dead_owners(leases: Iterable[LeaseRecord], now: float, ttl: float) -> set[str]:
    """The leases whose process is gone: not renewed within `ttl`, or of a pid that no
    longer runs on this host."""
    return {
        lease.owner
        for lease in leases
        if now - lease.heartbeat_at > ttl or (lease.host == HOST and not pid_alive(lease.pid))
    }


async def find_dead(store: Store, now: float, ttl: float) -> set[str]:
    return dead_owners(await store.list_leases(), now, ttl)


async def settle_orphan(
    store: Store,
    audit: AuditLog,
    run_id: str,
    owner: str,
    dead: Collection[str],
    *,
    now: float,
    halt: HaltReason | None = None,
    unowned: bool = False,
    keep: bool = False,
) -> RunRecord | None:
    """Claim a run nobody live serves and settle its calls in flight; None if it is not
    running or a live process owns it.

    Then `halt` it (with a dead letter), or with `keep` stay its owner (a resume), or
    leave it running with no owner. `unowned` claims a run with no owner too.
    """
    run = await store.claim_run(run_id, owner, dead=dead, unowned=unowned)
    if run is None:
        return None
    pending = await store.inflight(run_id)
    if pending:
        last = await store.list_steps(run_id, last=1)
        seq = last[-1].seq if last else 0
        for call in pending:
            seq += 1
            run = replace(
                run,
                updated_at=now,
                steps=run.steps + 1,
                tool_calls=run.tool_calls + (call.kind == "tool"),
                input_tokens=run.input_tokens + call.input_tokens,
                output_tokens=run.output_tokens + call.output_tokens,
                cost_usd=run.cost_usd + call.cost_usd,
            )
            step = StepRecord(
                run_id=run_id,
                seq=seq,
                kind=call.kind,
                name=call.name,
                input={"call": call.seq, "owner": call.owner},
                started_at=call.started_at,
                ended_at=now,
                status="interrupted",
                error=INTERRUPTED_ERROR,
                input_tokens=call.input_tokens,
                output_tokens=call.output_tokens,
                cost_usd=call.cost_usd,
            )
            entry = audit.seal(
                "step",
                {"seq": seq, "kind": call.kind, "name": call.name, "status": "interrupted",
                 "usd": call.cost_usd},
                run_id,
            )  # fmt: skip
            await store.record_step(run, step, entry, settles=call.id)
    await audit.append("run.recovered", {"interrupted_calls": len(pending)}, run_id)
    if halt is not None:
        return await _halt(store, audit, run, halt, now, len(pending))
    if not keep:
        run = replace(run, owner=None)
        await store.save_run(run)
    return run


async def _halt(
    store: Store, audit: AuditLog, run: RunRecord, reason: HaltReason, now: float, calls: int
) -> RunRecord:
    if reason is HaltReason.INTERRUPTED:
        message = f"the process serving the run died with {calls} call(s) in flight"
        rule = {"rule": "recovery", "interrupted_calls": calls}
    else:
        message = "an operator killed the run while no process served it"
        rule = {"rule": "kill switch", "requested_at": run.kill_requested_at}
    halt = Halt(reason, message, rule)
    run = replace(
        run,
        status=RunStatus.HALTED,
        halt_reason=reason.value,
        error=message,
        ended_at=now,
        updated_at=now,
        owner=None,
    )
    recent = [view_of(step) for step in await store.list_steps(run.id, last=PACKET_STEPS)]
    dead_letter = await store.halt_run(run, packet_for(run, recent, halt, now))
    await audit.append(
        "run.halted",
        {"reason": reason.value, "rule": rule["rule"], "dead_letter": dead_letter.id},
        run.id,
    )
    return run


async def recover(
    store: Store, audit: AuditLog, owner: str, *, now: float, ttl: float = LEASE_TTL_SECONDS
) -> list[str]:
    """Settle every run whose process is gone; the ids of the runs settled here.

    Runs of one request halt with `interrupted`; runs an operator asked to kill halt with
    `killed`; the others stay running, unowned, to be resumed. The dead leases go."""
    dead = await find_dead(store, now, ttl)
    dead.discard(owner)
    settled = []
    for run in await store.orphaned_runs(dead):
        halt = None
        if run.kill_requested_at is not None:
            halt = HaltReason.KILLED
        elif run.oneshot:
            halt = HaltReason.INTERRUPTED
        if await settle_orphan(store, audit, run.id, owner, dead, now=now, halt=halt):
            settled.append(run.id)
    if dead:
        await store.drop_leases(dead)
    return settled
