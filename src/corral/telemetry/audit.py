"""The tamper-evident audit log: an append-only SHA-256 hash chain over a canonical encoding.

Each entry's hash covers its own fields and its predecessor's hash, so editing,
deleting, reordering or inserting an entry breaks the chain at that point. The
store keeps a head (last seq and hash) written in the same transaction as each
entry, which catches entries cut off the end. A chain without a secret key cannot
stop someone who rewrites every later entry and the head; ship entries elsewhere
(or anchor the head) when that matters.

With storage redaction on, a payload is redacted before its hash is computed, so what is
stored is what was hashed and the chain verifies; the raw values were never in the log.
The log is never purged by retention (Store.purge): a purge appends a `retention.purged`
entry with its counts and leaves every earlier entry, and so the chain, as it was.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from corral.state import AuditEntry, Store
from corral.telemetry.tracing import decision


def entry_hash(
    seq: int, ts: float, kind: str, run_id: str | None, payload: Any, prev_hash: str
) -> str:
    """SHA-256 over sorted-key compact JSON: one byte string for one set of fields."""
    canonical = orjson.dumps(
        {
            "seq": seq,
            "ts": ts,
            "kind": kind,
            "run_id": run_id,
            "payload": payload,
            "prev": prev_hash,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()


def _recomputed(entry: AuditEntry) -> str:
    return entry_hash(entry.seq, entry.ts, entry.kind, entry.run_id, entry.payload, entry.prev_hash)


@dataclass(frozen=True, slots=True)
class Verification:
    """The result of walking the chain: intact with `count` entries, or the first break."""

    count: int
    broken_at: int | None = None  # position (1-based) of the first broken entry
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify_chain(entries: list[AuditEntry], head: tuple[int, str] | None) -> Verification:
    """Check links, hashes and sequence numbers in stored order, then the head."""
    previous = ""
    for position, entry in enumerate(entries, start=1):
        if entry.seq != position:
            return Verification(
                position - 1,
                position,
                f"entry {position}: found sequence number {entry.seq} where {position} belongs "
                "(an entry was deleted, inserted or moved)",
            )
        if entry.prev_hash != previous:
            return Verification(
                position - 1,
                position,
                f"entry {position}: link to the previous entry is broken "
                "(an entry before it was edited, deleted or inserted)",
            )
        if _recomputed(entry) != entry.hash:
            return Verification(
                position - 1,
                position,
                f"entry {position}: content does not match its hash (the entry was edited)",
            )
        previous = entry.hash
    last = (len(entries), previous) if entries else None
    if head != last:
        written = head[0] if head else 0
        return Verification(
            len(entries),
            len(entries) + 1,
            f"entry {len(entries) + 1}: the chain ends after {len(entries)} entries but "
            f"{written} were written (entries were deleted from the end)",
        )
    return Verification(len(entries))


class AuditLog:
    """Appends hash-chained entries to a Store and verifies the chain.

    `redact` is applied to every payload before it is hashed; by default the store's own
    redactor (Store.redactor), so every log over a redacting store redacts alike."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float] = time.time,
        *,
        redact: Callable[[Any], Any] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._redact = store.redactor if redact is None else redact

    async def append(
        self, kind: str, payload: Mapping[str, Any], run_id: str | None = None
    ) -> AuditEntry:
        """Chain an entry; one made during a call is also an event on the call's span."""
        entry = await self._store.append_audit(self.seal(kind, payload, run_id))
        decision(kind, entry.payload, run_id)
        return entry

    def seal(
        self, kind: str, payload: Mapping[str, Any], run_id: str | None = None
    ) -> Callable[[AuditEntry | None], AuditEntry]:
        """The entry to chain onto whatever is last when the store's transaction runs it
        (so two appenders never share a parent); for writes that carry their own entry."""
        body = dict(payload) if self._redact is None else dict(self._redact(dict(payload)))
        ts = self._clock()

        def chained(last: AuditEntry | None) -> AuditEntry:
            seq = last.seq + 1 if last else 1
            prev = last.hash if last else ""
            digest = entry_hash(seq, ts, kind, run_id, body, prev)
            return AuditEntry(
                seq=seq, ts=ts, kind=kind, run_id=run_id, payload=body, prev_hash=prev, hash=digest
            )

        return chained

    async def verify(self) -> Verification:
        return verify_chain(await self._store.list_audit(), await self._store.audit_head())
