"""`corral keys create|ls|revoke` against a real SQLite file."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import Result

from corral.cli import app
from corral.cli_common import when
from corral.gateway.keys import KeyRefused, authenticate, key_hash
from corral.state import AgentKeyRecord, Store
from tests.support import corral, example_policy, flat, on_store, runner

T0 = 1_700_000_000.0


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return example_policy(tmp_path)


def stored_key(key_id: str, **changes: Any) -> AgentKeyRecord:
    fields: dict[str, Any] = {"agent": "support", "admin": False, "created_at": T0} | changes
    name = key_id.removeprefix("key_")
    return AgentKeyRecord(id=key_id, key_hash=key_hash(f"ck_{name}"), prefix=f"ck_{name}", **fields)


# One key in each state the verbs tell apart.
SEEDED = [
    stored_key("key_live"),
    stored_key("key_root", agent=None, admin=True, expires_at=T0 + 100 * 365 * 86400),
    stored_key("key_old", agent="summarizer", expires_at=T0 + 60),
    stored_key("key_gone", revoked_at=T0 + 10),
]


async def seed(store: Store) -> None:
    for record in SEEDED:
        await store.add_agent_key(record)


async def snapshot(store: Store) -> tuple[Any, ...]:
    return await store.list_agent_keys(), await store.list_audit()


def created(policy: Path, result: Result) -> tuple[str, AgentKeyRecord]:
    """The key `keys create` printed, and the record it authenticates as."""
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert result.stdout == key + "\n"  # the key alone, for `KEY=$(corral keys create ...)`
    assert result.stderr.endswith("Copy it now: it will not be shown again.\n")
    return key, on_store(policy, lambda s: authenticate(s, key, time.time()))


def audited(policy: Path) -> list[tuple[str, str | None, Any]]:
    return [(e.kind, e.run_id, e.payload) for e in on_store(policy, lambda s: s.list_audit())]


# keys create


def test_create_an_agent_key(policy: Path) -> None:
    result = corral(policy, "keys", "create", "--agent", "support")
    key, record = created(policy, result)
    assert key.startswith("ck_") and not key.startswith("ck_admin_")
    assert (record.agent, record.admin, record.expires_at) == ("support", False, None)
    assert result.stderr.startswith(
        f"created a key for agent support, id {record.id}, never expires:\n"
    )
    assert audited(policy) == [
        ("key.created", None, {"id": record.id, "agent": "support", "admin": False,
                               "expires_at": None}),
    ]  # fmt: skip
    assert corral(policy, "audit", "verify").exit_code == 0


def test_create_an_admin_key_that_expires(policy: Path) -> None:
    result = corral(policy, "keys", "create", "--admin", "--expires", "30d")
    key, record = created(policy, result)
    assert key.startswith("ck_admin_")
    assert (record.agent, record.admin) == (None, True)
    assert record.expires_at is not None
    assert record.expires_at - record.created_at == pytest.approx(30 * 86400)
    expiry = re.escape(f"expires {time.strftime('%Y-%m-%d', time.gmtime(record.expires_at))}")
    assert re.match(
        rf"created an admin key, id {record.id}, {expiry} \d\d:\d\d:\d\d UTC:\n", result.stderr
    )
    assert audited(policy) == [
        ("key.created", None, {"id": record.id, "agent": None, "admin": True,
                               "expires_at": record.expires_at}),
    ]  # fmt: skip
    verified = corral(policy, "audit", "verify")
    assert verified.exit_code == 0 and "1 entries" in verified.output


def test_neither_the_key_nor_its_hash_is_shown_or_logged_again(policy: Path) -> None:
    key, record = created(policy, corral(policy, "keys", "create", "--agent", "support"))
    elsewhere = [
        corral(policy, "keys", "ls").output,
        corral(policy, "keys", "ls", "--json").output,
        str(audited(policy)),
    ]
    for text in elsewhere:
        assert record.id in text
        assert key not in text and record.key_hash not in text


# keys ls


def test_ls_empty_is_a_friendly_line(policy: Path) -> None:
    result = corral(policy, "keys", "ls")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "No keys yet. Make one with `corral keys create --agent NAME` (or --admin).\n"
    )
    as_json = corral(policy, "keys", "ls", "--json")
    assert as_json.exit_code == 0 and orjson.loads(as_json.output) == []


def test_ls_json_shows_each_key_and_its_status(policy: Path) -> None:
    on_store(policy, seed)
    result = corral(policy, "keys", "ls", "--json")
    assert result.exit_code == 0, result.output
    rows = orjson.loads(result.output)
    assert [(r["id"], r["agent"], r["admin"], r["status"]) for r in rows] == [
        ("key_live", "support", False, "active"),
        ("key_root", None, True, "active"),
        ("key_old", "summarizer", False, "expired"),
        ("key_gone", "support", False, "revoked"),
    ]
    assert set(rows[0]) == {
        "id", "prefix", "agent", "admin", "created_at", "expires_at", "revoked_at", "status",
    }  # fmt: skip
    assert rows[3]["revoked_at"] == T0 + 10


def key_rows(output: str) -> dict[str, list[str]]:
    rows = {}
    for line in output.splitlines():
        words = flat(line).split()
        if words and words[0].startswith("key_"):
            rows[words[0]] = words[1:]
    return rows


def test_ls_table_shows_each_key_and_its_status(policy: Path) -> None:
    on_store(policy, seed)
    wide = runner.invoke(app, ["keys", "ls", "--policy", str(policy)], env={"COLUMNS": "120"})
    assert wide.exit_code == 0, wide.output
    made = when(T0).split()
    never, ends = ["never"], when(SEEDED[1].expires_at).split()
    assert key_rows(wide.output) == {
        "key_live": ["ck_live", "support", *made, *never, "active"],
        "key_root": ["ck_root", "(admin)", *made, *ends, "active"],
        "key_old": ["ck_old", "summarizer", *made, *when(T0 + 60).split(), "expired"],
        "key_gone": ["ck_gone", "support", *made, *never, "revoked"],
    }


def test_ls_table_at_80_columns_keeps_ids_and_prefixes_whole(policy: Path) -> None:
    """The creation time is what goes when 80 columns are too few for every column."""
    on_store(policy, seed)
    result = runner.invoke(app, ["keys", "ls", "--policy", str(policy)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert max(map(len, result.output.splitlines())) <= 80, result.output
    assert "created" not in result.output
    rows = key_rows(result.output)
    assert rows["key_root"] == ["ck_root", "(admin)", *when(SEEDED[1].expires_at).split(), "active"]
    assert rows["key_old"][-1] == "expired" and rows["key_gone"][-1] == "revoked"


# keys revoke


def test_revoke_refuses_the_key_from_then_on_and_audits_it(policy: Path) -> None:
    key, record = created(policy, corral(policy, "keys", "create", "--agent", "support"))
    result = corral(policy, "keys", "revoke", record.id)
    assert result.exit_code == 0, result.output
    assert result.output == f"revoked key {record.id}\n"
    with pytest.raises(KeyRefused, match=r"^key revoked$"):
        on_store(policy, lambda s: authenticate(s, key, time.time()))
    listed = orjson.loads(corral(policy, "keys", "ls", "--json").output)
    assert [(r["id"], r["status"]) for r in listed] == [(record.id, "revoked")]
    assert [kind for kind, _, _ in audited(policy)] == ["key.created", "key.revoked"]
    assert audited(policy)[1] == ("key.revoked", None, {"id": record.id})
    verified = corral(policy, "audit", "verify")
    assert verified.exit_code == 0 and "2 entries" in verified.output


# bad arguments and wrong states: exit code, a message naming the problem, nothing written

CREATE = ("keys", "create")
EXPIRES = "Invalid value for '--expires': Value error,"
LIFETIME = f"{EXPIRES} a key must expire after more than 0s and within 36500d"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (CREATE, 2, "error: say whose key it is: --agent NAME for an agent, or --admin"),
        ((*CREATE, "--agent", "support", "--admin"), 2, "--agent and --admin are mutually excl"),
        ((*CREATE, "--agent", "ghost"), 2, "unknown agent 'ghost': the agents in"),
        ((*CREATE, "--agent", ""), 2, "unknown agent '': the agents in"),
        ((*CREATE, "--admin", "--expires", "10"), 2, f"{EXPIRES} expected a duration like"),
        ((*CREATE, "--admin", "--expires", "-5m"), 2, f"{EXPIRES} expected a duration like"),
        ((*CREATE, "--admin", "--expires", "0s"), 2, LIFETIME),
        ((*CREATE, "--admin", "--expires", "36501d"), 2, LIFETIME),
        ((*CREATE, "--admin", "--agent", "ghost"), 2, "--agent and --admin are mutually excl"),
        (("keys", "revoke"), 2, "Missing argument 'KEY_ID'"),
        (("keys", "revoke", "key_ghost"), 1, "error: no key 'key_ghost' in the store"),
        (("keys", "revoke", "key_gone"), 1, "key 'key_gone' was already revoked, at 2023-11-14"),
    ],
)
def test_bad_arguments_and_wrong_states_change_nothing(
    policy: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    on_store(policy, seed)
    before = on_store(policy, snapshot)
    result = corral(policy, *args)
    assert result.exit_code == code, result.output
    assert message in flat(result.output)
    assert on_store(policy, snapshot) == before


def test_unknown_agent_names_the_known_ones(policy: Path) -> None:
    result = corral(policy, "keys", "create", "--agent", "ghost")
    assert result.exit_code == 2
    assert flat(result.output) == (
        f"error: unknown agent 'ghost': the agents in {policy} are"
        " analyzer, summarizer, support, verifier"
    )


def test_unknown_agent_in_a_policy_without_agents(tmp_path: Path) -> None:
    bare = tmp_path / "corral.yaml"
    bare.write_text(f"version: 1\nstore: sqlite:///{tmp_path}/corral.db\n")
    result = corral(bare, "keys", "create", "--agent", "support")
    assert result.exit_code == 2
    assert flat(result.output) == f"error: unknown agent 'support': the agents in {bare} are none"
    assert not (tmp_path / "corral.db").exists()


def test_a_bad_policy_exits_2_for_every_verb(tmp_path: Path) -> None:
    bad = tmp_path / "corral.yaml"
    bad.write_text("version: 1\nretry: {max_delay: 8}\n")
    verbs = [
        ("keys", "create", "--agent", "support"),
        ("keys", "create", "--admin"),
        ("keys", "ls"),
        ("keys", "revoke", "key_live"),
    ]
    for verb in verbs:
        result = corral(bad, *verb)
        assert result.exit_code == 2, result.output
        assert "retry.max_delay: expected a duration" in result.output
