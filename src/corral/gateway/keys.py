"""API keys for the gateway: issue, authenticate, and tell admin keys from agent keys.

The store keeps only a key's SHA-256 hash and a short display prefix; the plaintext
exists once, in what `issue` returns.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Literal, TypeAlias

from corral.state import AgentKeyRecord, Store

KeyStatus: TypeAlias = Literal["active", "expired", "revoked"]

AGENT_PREFIX = "ck_"
ADMIN_PREFIX = "ck_admin_"
# 32 bytes = 256 bits of randomness, far past any guessing or birthday bound.
_RANDOM_BYTES = 32
# Random characters kept in the display prefix: enough to tell keys apart in a listing,
# few enough (36 of 256 bits) to leave the rest unguessable.
_SHOWN_RANDOM_CHARS = 6
# A key that should live longer than this should simply not expire; the bound also keeps
# every expiry a date that listings can print.
MAX_LIFETIME = 100 * 365 * 86400.0


class KeyRefused(Exception):
    """A key that does not authenticate, or lacks the rights asked for.

    `reason` is short and says nothing about other keys, so it can go to the client.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def new_key(admin: bool) -> str:
    """A fresh random key.

    The prefix helps people and secret scanners spot a Corral key; it grants nothing:
    whether a key is an admin key is decided by its stored record.
    """
    prefix = ADMIN_PREFIX if admin else AGENT_PREFIX
    return prefix + secrets.token_urlsafe(_RANDOM_BYTES)


def key_hash(key: str) -> str:
    """SHA-256 hex of the key.

    A fast unsalted hash is enough here: a key is 256 random bits, not a password, so
    there is no dictionary to slow down and salting would buy nothing. Being
    deterministic, it also lets the gateway find a key by its hash in one indexed lookup.
    """
    return hashlib.sha256(key.encode()).hexdigest()


def check_lifetime(seconds: float) -> float:
    """`seconds` if it is a usable key lifetime, else ValueError."""
    if not 0 < seconds <= MAX_LIFETIME:
        raise ValueError(
            f"a key must expire after more than 0s and within {MAX_LIFETIME / 86400:.0f}d;"
            " leave the expiry out for a key that never expires"
        )
    return seconds


def key_status(record: AgentKeyRecord, now: float) -> KeyStatus:
    """Revoked wins over expired: it is the more deliberate of the two."""
    if record.revoked_at is not None:
        return "revoked"
    if record.expires_at is not None and now >= record.expires_at:
        return "expired"
    return "active"


async def issue(
    store: Store, *, agent: str | None, admin: bool, expires_in: float | None, now: float
) -> tuple[str, AgentKeyRecord]:
    """Make and store a key; return its plaintext (the only time it exists) and its record.

    An admin key names no agent and an agent key names one (ValueError otherwise); that
    the agent is in the policy is for the caller to check, as the store does not know it.
    """
    if admin and agent is not None:
        raise ValueError("an admin key belongs to no agent")
    if not admin and not agent:
        raise ValueError("an agent key needs the name of its agent")
    if expires_in is not None:
        check_lifetime(expires_in)
    key = new_key(admin)
    shown = len(ADMIN_PREFIX if admin else AGENT_PREFIX) + _SHOWN_RANDOM_CHARS
    record = AgentKeyRecord(
        id=f"key_{secrets.token_hex(6)}",
        key_hash=key_hash(key),
        prefix=key[:shown],
        agent=agent,
        admin=admin,
        created_at=now,
        expires_at=None if expires_in is None else now + expires_in,
    )
    await store.add_agent_key(record)
    return key, record


async def authenticate(store: Store, key: str, now: float) -> AgentKeyRecord:
    """The active key's record, or KeyRefused saying why not.

    Looking the key up by its hash gives away nothing through timing: learning a hash
    does not help anyone find a key that has it.
    """
    record = await store.find_agent_key(key_hash(key))
    if record is None:
        raise KeyRefused("unknown key")
    status = key_status(record, now)
    if status != "active":
        raise KeyRefused(f"key {status}")
    return record


def require_admin(record: AgentKeyRecord) -> None:
    """KeyRefused unless the key is an admin key."""
    if not record.admin:
        raise KeyRefused("not an admin key")
