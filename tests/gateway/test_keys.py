"""Gateway keys against a real SQLite file: issue, authenticate, refuse, and keep no plaintext."""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.gateway.keys import (
    MAX_LIFETIME,
    KeyRefused,
    authenticate,
    issue,
    key_hash,
    new_key,
    require_admin,
)
from corral.state import SQLiteStore

T0 = 1_700_000_000.0
# What secrets.token_urlsafe(32) returns: 32 bytes in unpadded base64.
RANDOM_CHARS = 43


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "corral.db")
    yield opened
    await opened.close()


async def refusal(store: SQLiteStore, key: str, now: float) -> str:
    with pytest.raises(KeyRefused) as refused:
        await authenticate(store, key, now)
    assert str(refused.value) == refused.value.reason
    return refused.value.reason


# keys and hashes


@pytest.mark.parametrize(("admin", "prefix"), [(False, "ck_"), (True, "ck_admin_")])
def test_a_new_key_has_its_prefix_and_256_random_bits(admin: bool, prefix: str) -> None:
    keys = {new_key(admin) for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert key.startswith(prefix)
        assert len(key) == len(prefix) + RANDOM_CHARS


def test_key_hash_is_sha256_hex_and_differs_per_key() -> None:
    key = new_key(admin=False)
    assert key_hash(key) == hashlib.sha256(key.encode()).hexdigest() == key_hash(key)
    assert len({key_hash(new_key(admin=False)) for _ in range(100)}) == 100


# issue and authenticate


async def test_an_agent_key_round_trips(store: SQLiteStore) -> None:
    key, record = await issue(store, agent="support", admin=False, expires_in=None, now=T0)
    assert (record.agent, record.admin, record.created_at, record.expires_at) == (
        "support", False, T0, None,
    )  # fmt: skip
    assert record.key_hash == key_hash(key)
    assert key.startswith(record.prefix) and len(record.prefix) == len("ck_") + 6
    assert await authenticate(store, key, T0 + 10 * 365 * 86400) == record
    with pytest.raises(KeyRefused, match=r"^not an admin key$"):
        require_admin(record)


async def test_an_admin_key_round_trips(store: SQLiteStore) -> None:
    key, record = await issue(store, agent=None, admin=True, expires_in=None, now=T0)
    assert (record.agent, record.admin) == (None, True)
    assert key.startswith(record.prefix) and len(record.prefix) == len("ck_admin_") + 6
    authenticated = await authenticate(store, key, T0)
    assert authenticated == record
    require_admin(authenticated)


async def test_every_issue_makes_a_new_key_and_id(store: SQLiteStore) -> None:
    issued = [
        await issue(store, agent="support", admin=False, expires_in=None, now=T0) for _ in range(20)
    ]
    assert len({key for key, _ in issued}) == len({r.id for _, r in issued}) == 20
    assert len({r.key_hash for _, r in issued}) == 20
    assert await store.list_agent_keys() == [record for _, record in issued]


async def test_a_key_expires_at_its_lifetime(store: SQLiteStore) -> None:
    key, record = await issue(store, agent="support", admin=False, expires_in=60, now=T0)
    assert record.expires_at == T0 + 60
    assert await authenticate(store, key, T0 + 59.999) == record
    assert await refusal(store, key, T0 + 60) == "key expired"
    assert await refusal(store, key, T0 + 3600) == "key expired"


async def test_a_revoked_key_is_refused_even_once_expired(store: SQLiteStore) -> None:
    key, record = await issue(store, agent=None, admin=True, expires_in=60, now=T0)
    assert await store.revoke_agent_key(record.id, T0 + 1)
    assert await refusal(store, key, T0 + 2) == "key revoked"
    assert await refusal(store, key, T0 + 120) == "key revoked"


async def test_an_unknown_key_is_refused(store: SQLiteStore) -> None:
    key, _ = await issue(store, agent="support", admin=False, expires_in=None, now=T0)
    near_miss = key[:-1] + ("A" if key[-1] != "A" else "B")
    for other in (near_miss, key + "x", key.upper(), "", new_key(admin=False)):
        assert await refusal(store, other, T0) == "unknown key"


# bad requests store nothing


@pytest.mark.parametrize(
    ("agent", "admin", "message"),
    [
        ("support", True, "an admin key belongs to no agent"),
        (None, False, "an agent key needs the name of its agent"),
        ("", False, "an agent key needs the name of its agent"),
    ],
)
async def test_a_key_names_an_agent_exactly_when_it_is_not_admin(
    store: SQLiteStore, agent: str | None, admin: bool, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        await issue(store, agent=agent, admin=admin, expires_in=None, now=T0)
    assert await store.list_agent_keys() == []


@pytest.mark.parametrize("lifetime", [0.0, -1.0, MAX_LIFETIME + 1, math.inf, math.nan])
async def test_a_lifetime_out_of_range_is_refused(store: SQLiteStore, lifetime: float) -> None:
    with pytest.raises(ValueError, match="a key must expire after more than 0s and within 36500d"):
        await issue(store, agent="support", admin=False, expires_in=lifetime, now=T0)
    assert await store.list_agent_keys() == []


async def test_the_longest_lifetime_is_accepted(store: SQLiteStore) -> None:
    _, record = await issue(store, agent=None, admin=True, expires_in=MAX_LIFETIME, now=T0)
    assert record.expires_at == T0 + MAX_LIFETIME


# what the store keeps


async def test_the_store_file_holds_hashes_but_never_a_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    store = SQLiteStore(path)
    issued = [
        await issue(store, agent="support", admin=False, expires_in=None, now=T0),
        await issue(store, agent=None, admin=True, expires_in=3600, now=T0),
    ]

    def scan() -> None:
        stored = b"".join(p.read_bytes() for p in tmp_path.glob("keys.db*"))  # WAL included
        for key, record in issued:
            assert record.key_hash.encode() in stored  # the scan does see the table
            assert key.encode() not in stored
            assert key.removeprefix(record.prefix).encode() not in stored

    scan()
    await store.close()  # checkpoints the WAL into the main file
    scan()
