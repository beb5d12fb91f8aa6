"""The Store interface: durable records shared by every process of a deployment.

Each method is one logical read or write; a write is one transaction, so a crash
leaves it either whole or absent. Implementations report a broken constraint or an
unknown schema with the errors below rather than their driver's, so callers do not
depend on the backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from corral.calls import RunStatus
from corral.state.records import (
    AgentKeyRecord,
    ApprovalRecord,
    ApprovalStatus,
    ArtifactRecord,
    AuditEntry,
    CheckpointRecord,
    DeadLetterRecord,
    DeadLetterStatus,
    IdempotencyRecord,
    Json,
    RunRecord,
    StepRecord,
)


class StoreError(Exception):
    """Base of the errors a Store raises."""


class SchemaVersionError(StoreError):
    """The database was written by a newer Corral than this one."""


class ConstraintError(StoreError, ValueError):
    """A write broke a constraint: a duplicate key, an unknown run, a value out of range."""


class NotFoundError(StoreError, LookupError):
    """A write addressed a record that does not exist."""


class Store(ABC):
    """Durable records: runs, steps, checkpoints, dead letters, approvals, keys, audit."""

    # runs

    @abstractmethod
    async def create_run(self, run: RunRecord) -> None:
        """Insert a new run; ConstraintError if the id is taken."""

    @abstractmethod
    async def save_run(self, run: RunRecord) -> None:
        """Write every column except kill_requested_at, which only request_kill sets.

        last_checkpoint_id never moves backwards: add_checkpoint may have advanced it
        since the caller read the run. NotFoundError if the run does not exist.
        """

    @abstractmethod
    async def get_run(self, run_id: str) -> RunRecord | None: ...

    @abstractmethod
    async def list_runs(
        self, *, limit: int = 50, status: RunStatus | None = None, agent: str | None = None
    ) -> list[RunRecord]:
        """Newest first."""

    @abstractmethod
    async def request_kill(self, run_id: str, at: float) -> bool:
        """Mark a running run to be killed; False if there is no such run or it has ended.

        A second request keeps the first time, from which time-to-safe-fail is measured.
        """

    # steps

    @abstractmethod
    async def add_steps(self, steps: Sequence[StepRecord]) -> None:
        """Insert all the steps in one transaction: all of them are stored or none."""

    @abstractmethod
    async def list_steps(self, run_id: str, *, last: int | None = None) -> list[StepRecord]:
        """A run's steps by seq; with `last`, only the last that many."""

    # checkpoints

    @abstractmethod
    async def add_checkpoint(self, run_id: str, step: int, state: Json) -> CheckpointRecord:
        """Store a checkpoint and make it the run's last_checkpoint_id, atomically."""

    @abstractmethod
    async def get_checkpoint(self, checkpoint_id: int) -> CheckpointRecord | None: ...

    @abstractmethod
    async def last_checkpoint(self, run_id: str) -> CheckpointRecord | None: ...

    # dead letters

    @abstractmethod
    async def add_dead_letter(self, run_id: str, reason: str, packet: Json) -> DeadLetterRecord:
        """Queue a halted run's packet with status "open"."""

    @abstractmethod
    async def get_dead_letter(self, dead_letter_id: int) -> DeadLetterRecord | None: ...

    @abstractmethod
    async def list_dead_letters(
        self, *, status: DeadLetterStatus | None = "open"
    ) -> list[DeadLetterRecord]:
        """Oldest first; status None lists all."""

    @abstractmethod
    async def set_dead_letter_status(self, dead_letter_id: int, status: DeadLetterStatus) -> bool:
        """False if there is no such dead letter."""

    # approvals

    @abstractmethod
    async def add_approval(self, approval: ApprovalRecord) -> None: ...

    @abstractmethod
    async def get_approval(self, approval_id: str) -> ApprovalRecord | None: ...

    @abstractmethod
    async def list_approvals(self, *, status: ApprovalStatus | None = None) -> list[ApprovalRecord]:
        """Oldest request first."""

    @abstractmethod
    async def decide_approval(
        self,
        approval_id: str,
        status: ApprovalStatus,
        *,
        by: str | None,
        at: float,
        note: str | None = None,
    ) -> bool:
        """Decide a pending approval; False if it is unknown or already decided.

        The check and the write are one atomic step, so of two racing deciders
        exactly one wins. ValueError if `status` is "pending".
        """

    # idempotency

    @abstractmethod
    async def get_idempotent(self, key: str) -> IdempotencyRecord | None: ...

    @abstractmethod
    async def put_idempotent(self, record: IdempotencyRecord) -> IdempotencyRecord:
        """Store the record unless the key exists; return the record stored under the key."""

    # artifacts

    @abstractmethod
    async def put_artifact(self, artifact: ArtifactRecord) -> None:
        """ConstraintError if the handle is taken: content is never silently replaced."""

    @abstractmethod
    async def get_artifact(self, handle: str) -> ArtifactRecord | None: ...

    # agent keys

    @abstractmethod
    async def add_agent_key(self, key: AgentKeyRecord) -> None: ...

    @abstractmethod
    async def find_agent_key(self, key_hash: str) -> AgentKeyRecord | None:
        """The key with that hash, revoked and expired ones included: the caller decides."""

    @abstractmethod
    async def list_agent_keys(self) -> list[AgentKeyRecord]:
        """Oldest first."""

    @abstractmethod
    async def revoke_agent_key(self, key_id: str, at: float) -> bool:
        """False if there is no such key or it is already revoked."""

    # audit

    @abstractmethod
    async def append_audit(self, seal: Callable[[AuditEntry | None], AuditEntry]) -> AuditEntry:
        """Append one entry to the audit log, excluding every other writer meanwhile.

        `seal` gets the last entry (None for an empty log) and returns the new one; it
        runs inside the write transaction, so it must be quick and must not touch the
        store. The head (seq, hash) is updated in the same transaction.
        """

    @abstractmethod
    async def list_audit(self) -> list[AuditEntry]:
        """Every entry in insertion order, which does not trust the stored seq."""

    @abstractmethod
    async def audit_head(self) -> tuple[int, str] | None:
        """(seq, hash) of the last entry appended, None if nothing was."""

    # lifecycle

    @abstractmethod
    async def close(self) -> None:
        """Release the connection; safe to call twice."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
