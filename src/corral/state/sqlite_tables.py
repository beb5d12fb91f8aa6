"""How the stores map records to rows, and the statements the SQLite store shares between
its operations: one place for each table's columns and encodings (PostgresStore uses the
same columns, encodings and conditions; see postgres_tables.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from operator import attrgetter
from typing import Any, Generic, TypeVar

import orjson

from corral.calls import RunStatus
from corral.state.records import (
    AgentKeyRecord,
    ApprovalRecord,
    ArtifactRecord,
    AuditEntry,
    CheckpointRecord,
    DeadLetterRecord,
    IdempotencyRecord,
    InflightRecord,
    Json,
    LeaseRecord,
    ProposalRecord,
    RunRecord,
    StepRecord,
)

R = TypeVar("R")


def _dump(value: Json) -> str:
    return orjson.dumps(value).decode()


def _dump_opt(value: Json) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _load_opt(text: str | None) -> Json:
    return None if text is None else orjson.loads(text)


class _Table(Generic[R]):
    """Maps a record dataclass to its table: columns in field order, JSON encoded."""

    def __init__(
        self,
        name: str,
        record: type[R],
        encode: Mapping[str, Callable[[Any], Any]],
        decode: Mapping[str, Callable[[Any], Any]],
    ) -> None:
        # R is always a record dataclass, which a TypeVar cannot say to mypy.
        self.name = name
        self.columns = tuple(f.name for f in fields(record))  # type: ignore[arg-type]
        self._make: Callable[..., R] = record
        self._get = attrgetter(*self.columns)
        self._encode = [(i, encode[c]) for i, c in enumerate(self.columns) if c in encode]
        self._decode = [(i, decode[c]) for i, c in enumerate(self.columns) if c in decode]
        names = ", ".join(self.columns)
        self.select = f"SELECT {names} FROM {name}"
        self.insert = f"INSERT INTO {name} ({names}) VALUES ({', '.join('?' * len(self.columns))})"

    def to_row(self, record: R) -> list[Any]:
        row = list(self._get(record))
        for i, encode in self._encode:
            row[i] = encode(row[i])
        return row

    def from_row(self, row: Sequence[Any]) -> R:
        values = list(row)
        for i, decode in self._decode:
            values[i] = decode(values[i])
        return self._make(*values)


_RUNS = _Table(
    "runs",
    RunRecord,
    {"outcome": _dump_opt, "topup": _dump_opt},
    {"outcome": _load_opt, "topup": _load_opt, "status": RunStatus, "oneshot": bool},
)
_STEPS = _Table(
    "steps",
    StepRecord,
    {"input": _dump, "output": _dump_opt},
    {"input": orjson.loads, "output": _load_opt},
)
_CHECKPOINTS = _Table("checkpoints", CheckpointRecord, {}, {"state": orjson.loads})
_DEAD_LETTERS = _Table(
    "dead_letters", DeadLetterRecord, {"packet": _dump}, {"packet": orjson.loads}
)
_APPROVALS = _Table(
    "approvals",
    ApprovalRecord,
    {"args": _dump, "approved_args": _dump_opt, "panel": _dump_opt, "answer": _dump_opt},
    {"args": orjson.loads, "approved_args": _load_opt, "panel": _load_opt, "answer": _load_opt},
)
_PROPOSALS = _Table(
    "proposals",
    ProposalRecord,
    {"args": _dump, "result": _dump_opt},
    {"args": orjson.loads, "result": _load_opt},
)
_IDEMPOTENCY = _Table("idempotency", IdempotencyRecord, {"result": _dump}, {"result": orjson.loads})
_ARTIFACTS = _Table("artifacts", ArtifactRecord, {}, {})
_AGENT_KEYS = _Table("agent_keys", AgentKeyRecord, {}, {"admin": bool})
_AUDIT = _Table("audit", AuditEntry, {"payload": _dump}, {"payload": orjson.loads})
_INFLIGHT = _Table("inflight", InflightRecord, {}, {})
_LEASES = _Table("leases", LeaseRecord, {}, {})

# A run's owner is gone: one of the owners found dead (a parameter list), or one with no
# lease at all (a process writes its lease before it owns any run).
_OWNER_GONE = (
    "(owner IN (SELECT value FROM json_each(?)) OR owner NOT IN (SELECT owner FROM leases))"
)

# save_run sets every column but these: the id addresses the row, only request_kill
# sets the kill time, and last_checkpoint_id is kept monotonic below.
_SAVED_RUN_COLUMNS = tuple(
    c for c in _RUNS.columns if c not in {"id", "kill_requested_at", "last_checkpoint_id"}
)
_SAVE_RUN = (
    "UPDATE runs SET "
    + ", ".join(f"{c} = :{c}" for c in _SAVED_RUN_COLUMNS)
    + ", last_checkpoint_id = NULLIF(MAX(IFNULL(last_checkpoint_id, 0),"
    " IFNULL(:last_checkpoint_id, 0)), 0) WHERE id = :id"
)


_SET_AUDIT_HEAD = (
    "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash"
)

# What a step changes on its run. Only these columns, so the runs indexes (none covers
# them) are left alone: setting every column rewrote all four index entries per step.
_TOTALS = (
    "updated_at", "steps", "tool_calls", "input_tokens", "output_tokens", "cost_usd", "waiting_s",
)  # fmt: skip
_SAVE_TOTALS = f"UPDATE runs SET {', '.join(f'{c} = :{c}' for c in _TOTALS)} WHERE id = :id"


_SETTLE_INFLIGHT = "DELETE FROM inflight WHERE id = ?"
# The steps the steps and tool_calls caps count (as the record gate counts them): answered
# or interrupted calls, and answered calls a halt followed (those keep their output).
_COUNTED = "(s.status IN ('ok', 'interrupted') OR (s.status = 'halted' AND s.output IS NOT NULL))"

# Answered from the runs_kill_requested index alone (see migration 2).
_KILL_REQUESTS = (
    "SELECT id, kill_requested_at FROM runs"
    " WHERE status = 'running' AND kill_requested_at IS NOT NULL"
)
