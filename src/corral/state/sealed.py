"""SealedStore: any Store, keeping what it is given safe at rest.

Corral keeps two kinds of values, and each is made safe its own way:

- What it keeps for people and telemetry (steps' input, output and error, escalation
  packets, a run's task, outcome and error) is passed through `redact` (PII replaced by
  labels) before the inner store sees it, and read back redacted: nobody needs the raw
  values again, so none are kept.
- What it must use again exactly is encrypted (Fernet: AES-128-CBC with an HMAC-SHA256,
  from the `cryptography` package) under the key in CORRAL_DATA_KEY and decrypted on
  read, so callers see the originals: an approval's arguments, edited arguments, panel
  (what the reviewer sees in full; its rule is read back to answer a request sent again)
  and held model answer; a shadow proposal's arguments and result; the result an
  idempotent replay returns; artifacts behind context pointers; checkpoints' state,
  which a resume hands back. These are dropped by the purge once nothing can use them.

The audit log is not redacted here: the audit module hashes an entry before the store
sees it, so it applies this store's `redactor` to the payload first (telemetry/audit.py).

A sealed value is stored as the string "corral-sealed:1:" + the token (bytes with that
prefix, for an artifact's content), so a value written before sealing was turned on still
reads back as it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence

import orjson
from cryptography.fernet import Fernet, InvalidToken

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
    InflightRecord,
    Json,
    LeaseRecord,
    ProposalRecord,
    RunRecord,
    Spending,
    StepRecord,
    Verdict,
)
from corral.state.store import RunOrigin, StatsGroup, StepStats, Store, StoreError

DATA_KEY_ENV = "CORRAL_DATA_KEY"
MAKE_KEY = (
    "make one with `corral keys data-key` (or python -c 'from cryptography.fernet import"
    " Fernet; print(Fernet.generate_key().decode())')"
)
PREFIX = "corral-sealed:1:"
_PREFIX_BYTES = PREFIX.encode()

Redact = Callable[[Json], Json]


class DataKeyError(StoreError, ValueError):
    """CORRAL_DATA_KEY is missing or malformed, or does not open what the store sealed."""


def data_key(env: Mapping[str, str]) -> bytes:
    """The key CORRAL_DATA_KEY holds, checked; DataKeyError saying how to make one if it is
    missing or is not a Fernet key (32 bytes in URL-safe base64)."""
    text = env.get(DATA_KEY_ENV, "").strip()
    if not text:
        raise DataKeyError(
            f"{DATA_KEY_ENV} is not set: with guards.storage.pii on (the default when"
            " guards.output.pii is not off) Corral encrypts the values it must use again"
            f" exactly with it; {MAKE_KEY}, and give every process that opens the store the"
            " same key (losing it loses pending approvals' arguments and replayable results)"
        )
    try:
        Fernet(text.encode())
    except ValueError:
        raise DataKeyError(
            f"{DATA_KEY_ENV} is not a valid key (32 bytes in URL-safe base64); {MAKE_KEY}"
        ) from None
    return text.encode()


def new_data_key() -> str:
    """A fresh key for CORRAL_DATA_KEY."""
    return Fernet.generate_key().decode()


class SealedStore(Store):
    """Delegates every Store method to `inner`, redacting and encrypting on the way in
    and decrypting on the way out (see the module's docstring)."""

    def __init__(self, inner: Store, key: bytes, redact: Redact | None = None) -> None:
        self.inner = inner
        self._fernet = Fernet(key)
        self.redactor = redact

    # encodings

    def _seal(self, value: Json) -> Json:
        if value is None:
            return None
        return PREFIX + self._fernet.encrypt(orjson.dumps(value)).decode()

    def _open(self, value: Json) -> Json:
        if isinstance(value, str) and value.startswith(PREFIX):
            return orjson.loads(self._decrypt(value[len(PREFIX) :].encode()))
        return value

    def _decrypt(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise DataKeyError(
                f"a value in the store does not open with {DATA_KEY_ENV}: it was sealed"
                " with another key (or edited)"
            ) from None

    def _kept(self, value: Json) -> Json:
        return value if self.redactor is None or value is None else self.redactor(value)

    def _run_in(self, run: RunRecord) -> RunRecord:
        if self.redactor is None or (run.task is None and run.outcome is None and not run.error):
            return run
        kept = self._kept
        return dataclasses.replace(
            run, task=kept(run.task), outcome=kept(run.outcome), error=kept(run.error)
        )

    def _step_in(self, step: StepRecord) -> StepRecord:
        if self.redactor is None:
            return step
        return dataclasses.replace(
            step,
            input=self._kept(step.input),
            output=self._kept(step.output),
            error=self._kept(step.error),
        )

    def _approval_in(self, a: ApprovalRecord) -> ApprovalRecord:
        return _approval_fields(a, self._seal)

    def _approval_out(self, a: ApprovalRecord) -> ApprovalRecord:
        return _approval_fields(a, self._open)

    def _proposal_out(self, p: ProposalRecord) -> ProposalRecord:
        return dataclasses.replace(p, args=self._open(p.args), result=self._open(p.result))

    def _idempotent_out(self, r: IdempotencyRecord | None) -> IdempotencyRecord | None:
        return None if r is None else dataclasses.replace(r, result=self._open(r.result))

    def _checkpoint_out(self, c: CheckpointRecord | None) -> CheckpointRecord | None:
        return None if c is None else dataclasses.replace(c, state=self._open(c.state))

    # runs

    async def create_run(self, run: RunRecord) -> None:
        await self.inner.create_run(self._run_in(run))

    async def save_run(self, run: RunRecord) -> None:
        await self.inner.save_run(self._run_in(run))

    async def get_run(self, run_id: str) -> RunRecord | None:
        return await self.inner.get_run(run_id)

    async def list_runs(
        self,
        *,
        limit: int = 50,
        status: RunStatus | None = None,
        agent: str | None = None,
        session: str | None = None,
    ) -> list[RunRecord]:
        return await self.inner.list_runs(limit=limit, status=status, agent=agent, session=session)

    async def request_kill(self, run_id: str, at: float) -> bool:
        return await self.inner.request_kill(run_id, at)

    async def kill_requests(self) -> dict[str, float]:
        return await self.inner.kill_requests()

    async def halt_run(self, run: RunRecord, packet: Json) -> DeadLetterRecord:
        return await self.inner.halt_run(self._run_in(run), self._kept(packet))

    async def reopen_run(self, run_id: str, *, topup: Mapping[str, float], at: float) -> RunRecord:
        return await self.inner.reopen_run(run_id, topup=topup, at=at)

    async def claim_run(
        self, run_id: str, owner: str, *, dead: Collection[str], unowned: bool = True
    ) -> RunRecord | None:
        return await self.inner.claim_run(run_id, owner, dead=dead, unowned=unowned)

    async def orphaned_runs(self, dead: Collection[str]) -> list[RunRecord]:
        return await self.inner.orphaned_runs(dead)

    async def spending(
        self,
        *,
        session: str | None = None,
        agents: Collection[str] | None = None,
        agent_type: str | None = None,
        since: float | None = None,
    ) -> Spending:
        return await self.inner.spending(
            session=session, agents=agents, agent_type=agent_type, since=since
        )

    # write-ahead records and leases

    async def begin_call(self, record: InflightRecord) -> None:
        await self.inner.begin_call(record)

    async def inflight(self, run_id: str) -> list[InflightRecord]:
        return await self.inner.inflight(run_id)

    async def renew_lease(self, lease: LeaseRecord) -> None:
        await self.inner.renew_lease(lease)

    async def list_leases(self) -> list[LeaseRecord]:
        return await self.inner.list_leases()

    async def drop_leases(self, owners: Collection[str]) -> None:
        await self.inner.drop_leases(owners)

    # steps

    async def add_steps(self, steps: Sequence[StepRecord]) -> None:
        await self.inner.add_steps([self._step_in(step) for step in steps])

    async def record_step(
        self,
        run: RunRecord,
        step: StepRecord,
        seal: Callable[[AuditEntry | None], AuditEntry] | None = None,
        *,
        settles: str | None = None,
    ) -> None:
        await self.inner.record_step(run, self._step_in(step), seal, settles=settles)

    def queue_step(
        self,
        run: RunRecord,
        step: StepRecord,
        seal: Callable[[AuditEntry | None], AuditEntry] | None = None,
        *,
        settles: str | None = None,
    ) -> None:
        self.inner.queue_step(run, self._step_in(step), seal, settles=settles)

    async def list_steps(self, run_id: str, *, last: int | None = None) -> list[StepRecord]:
        return await self.inner.list_steps(run_id, last=last)

    # checkpoints

    async def add_checkpoint(self, run_id: str, step: int, state: Json) -> CheckpointRecord:
        saved = await self.inner.add_checkpoint(run_id, step, self._seal(state))
        return dataclasses.replace(saved, state=state)

    async def get_checkpoint(self, checkpoint_id: int) -> CheckpointRecord | None:
        return self._checkpoint_out(await self.inner.get_checkpoint(checkpoint_id))

    async def last_checkpoint(self, run_id: str) -> CheckpointRecord | None:
        return self._checkpoint_out(await self.inner.last_checkpoint(run_id))

    # dead letters

    async def add_dead_letter(self, run_id: str, reason: str, packet: Json) -> DeadLetterRecord:
        return await self.inner.add_dead_letter(run_id, reason, self._kept(packet))

    async def get_dead_letter(self, dead_letter_id: int) -> DeadLetterRecord | None:
        return await self.inner.get_dead_letter(dead_letter_id)

    async def list_dead_letters(
        self, *, status: DeadLetterStatus | None = "open"
    ) -> list[DeadLetterRecord]:
        return await self.inner.list_dead_letters(status=status)

    async def dead_letter_for_run(self, run_id: str) -> DeadLetterRecord | None:
        return await self.inner.dead_letter_for_run(run_id)

    async def set_dead_letter_status(
        self,
        dead_letter_id: int,
        status: DeadLetterStatus,
        *,
        only_if: DeadLetterStatus | None = None,
    ) -> bool:
        return await self.inner.set_dead_letter_status(dead_letter_id, status, only_if=only_if)

    # approvals

    async def add_approval(self, approval: ApprovalRecord) -> None:
        await self.inner.add_approval(self._approval_in(approval))

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        found = await self.inner.get_approval(approval_id)
        return None if found is None else self._approval_out(found)

    async def list_approvals(
        self, *, status: ApprovalStatus | None = None, run_id: str | None = None
    ) -> list[ApprovalRecord]:
        found = await self.inner.list_approvals(status=status, run_id=run_id)
        return [self._approval_out(a) for a in found]

    async def find_approvals(
        self, *, call_key: str | None = None, request_key: str | None = None
    ) -> list[ApprovalRecord]:
        found = await self.inner.find_approvals(call_key=call_key, request_key=request_key)
        return [self._approval_out(a) for a in found]

    async def approvals_by_id(self, ids: Collection[str]) -> list[ApprovalRecord]:
        return [self._approval_out(a) for a in await self.inner.approvals_by_id(ids)]

    async def decide_approval(
        self,
        approval_id: str,
        status: ApprovalStatus,
        *,
        by: str | None,
        at: float,
        note: str | None = None,
        args: Json = None,
    ) -> bool:
        return await self.inner.decide_approval(
            approval_id, status, by=by, at=at, note=note, args=self._seal(args)
        )

    async def escalate_approval(
        self, approval_id: str, *, escalations: int, timeout_at: float
    ) -> bool:
        return await self.inner.escalate_approval(
            approval_id, escalations=escalations, timeout_at=timeout_at
        )

    # shadow proposals

    async def add_proposal(self, proposal: ProposalRecord) -> None:
        sealed = dataclasses.replace(
            proposal, args=self._seal(proposal.args), result=self._seal(proposal.result)
        )
        await self.inner.add_proposal(sealed)

    async def get_proposal(self, proposal_id: str) -> ProposalRecord | None:
        found = await self.inner.get_proposal(proposal_id)
        return None if found is None else self._proposal_out(found)

    async def list_proposals(
        self, *, agent: str | None = None, tool: str | None = None
    ) -> list[ProposalRecord]:
        found = await self.inner.list_proposals(agent=agent, tool=tool)
        return [self._proposal_out(p) for p in found]

    async def review_proposal(
        self, proposal_id: str, verdict: Verdict, *, by: str, at: float, note: str | None = None
    ) -> bool:
        return await self.inner.review_proposal(proposal_id, verdict, by=by, at=at, note=note)

    # idempotency

    async def get_idempotent(self, key: str) -> IdempotencyRecord | None:
        return self._idempotent_out(await self.inner.get_idempotent(key))

    async def put_idempotent(self, record: IdempotencyRecord) -> IdempotencyRecord:
        sealed = dataclasses.replace(record, result=self._seal(record.result))
        stored = await self.inner.put_idempotent(sealed)
        if stored is sealed:
            return record
        return dataclasses.replace(stored, result=self._open(stored.result))

    # artifacts

    async def put_artifact(self, artifact: ArtifactRecord) -> None:
        content = _PREFIX_BYTES + self._fernet.encrypt(artifact.content)
        await self.inner.put_artifact(dataclasses.replace(artifact, content=content))

    async def get_artifact(self, handle: str) -> ArtifactRecord | None:
        found = await self.inner.get_artifact(handle)
        if found is None or not found.content.startswith(_PREFIX_BYTES):
            return found
        content = self._decrypt(found.content[len(_PREFIX_BYTES) :])
        return dataclasses.replace(found, content=content)

    # agent keys

    async def add_agent_key(self, key: AgentKeyRecord) -> None:
        await self.inner.add_agent_key(key)

    async def find_agent_key(self, key_hash: str) -> AgentKeyRecord | None:
        return await self.inner.find_agent_key(key_hash)

    async def list_agent_keys(self) -> list[AgentKeyRecord]:
        return await self.inner.list_agent_keys()

    async def revoke_agent_key(self, key_id: str, at: float) -> bool:
        return await self.inner.revoke_agent_key(key_id, at)

    # audit (redacted by the audit log before it hashes an entry)

    async def append_audit(self, seal: Callable[[AuditEntry | None], AuditEntry]) -> AuditEntry:
        return await self.inner.append_audit(seal)

    async def list_audit(self) -> list[AuditEntry]:
        return await self.inner.list_audit()

    async def audit_head(self) -> tuple[int, str] | None:
        return await self.inner.audit_head()

    # retention

    async def purge(
        self,
        *,
        steps_before: float | None,
        artifacts_before: float | None,
        dead_letters_before: float | None,
        answers_before: float | None = None,
        dry_run: bool,
    ) -> dict[str, int]:
        return await self.inner.purge(
            steps_before=steps_before,
            artifacts_before=artifacts_before,
            dead_letters_before=dead_letters_before,
            answers_before=answers_before,
            dry_run=dry_run,
        )

    # observability (what a run keeps for people was redacted on the way in, as above)

    async def runs_between(self, since: float, until: float) -> list[RunRecord]:
        return await self.inner.runs_between(since, until)

    async def run_origins(self, since: float, until: float) -> list[RunOrigin]:
        return await self.inner.run_origins(since, until)

    async def step_stats(
        self, since: float, until: float, *, by: StatsGroup = "agent"
    ) -> list[StepStats]:
        return await self.inner.step_stats(since, until, by=by)

    # lifecycle

    async def close(self) -> None:
        await self.inner.close()


def _approval_fields(a: ApprovalRecord, change: Callable[[Json], Json]) -> ApprovalRecord:
    """The approval with `change` applied to what a reviewer and a resume need exactly."""
    return dataclasses.replace(
        a,
        args=change(a.args),
        approved_args=change(a.approved_args),
        panel=change(a.panel),
        answer=change(a.answer),
    )
