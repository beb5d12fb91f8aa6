"""The admin API's routes, called through AdminAPI.handle on a real SQLite store.

The app in front of it (keys, body decoding) is tested over HTTP in test_http.py; here
each route's answers, refusals and side effects are checked one by one.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from corral import Halted, HaltReason, Run, RunStatus, Supervisor
from corral.gates.breaker import breaker_settings
from corral.gateway.admin import MAX_RUNS_LIMIT, AdminAPI
from corral.policy import Breaker
from corral.state import DeadLetterRecord, StepRecord, Store
from tests.support import example_policy
from tests.test_cli_dlq import PACKET, T0, halt, seed, snapshot

NOW = T0 + 100.0
ENV = {"SIM_API_KEY": "sim"}
Reply = tuple[int, Any]


class Admin:
    """The API under test and the supervisor whose parts it was built from, as the app
    builds it."""

    def __init__(self, sup: Supervisor, policy: Path) -> None:
        self.sup = sup
        self.policy = policy
        self.api = AdminAPI(sup.store, sup.audit, sup.policy, sup.counters, clock=lambda: NOW)

    @property
    def store(self) -> Store:
        return self.sup.store

    async def call(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
    ) -> Reply:
        status, payload = await self.api.handle(method, path, query or {}, body)
        orjson.dumps(payload)  # every answer must go out as JSON
        return status, payload

    async def get(self, path: str, **query: str) -> Reply:
        return await self.call("GET", path, query)

    async def post(self, path: str, body: Any = None) -> Reply:
        return await self.call("POST", path, body=body)


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    policy = example_policy(tmp_path)
    sup = Supervisor.from_policy(policy, env=ENV)
    yield Admin(sup, policy)
    await sup.close()


def refused(reply: Reply, status: int, kind: str, message: str = "") -> None:
    got, payload = reply
    assert got == status, payload
    assert set(payload["error"]) >= {"type", "message"}
    assert payload["error"]["type"] == kind
    assert message in payload["error"]["message"]


# --- routing ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/admin",
        "/admin/",
        "/admin/nope",
        "/admin/runs/",  # a placeholder takes a whole, non-empty segment
        "/admin/runs/r/kill/now",
        "/admin/dlq/r/resend",
        "/admin/policy",
        "/admin/audit",
    ],
)
async def test_an_unknown_path_is_404(admin: Admin, path: str) -> None:
    refused(await admin.get(path), 404, "not_found", f"no admin route {path}")
    refused(await admin.post(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/admin/runs", "GET"),
        ("DELETE", "/admin/runs/live", "GET"),
        ("GET", "/admin/runs/live/kill", "POST"),
        ("PUT", "/admin/dlq", "GET"),
        ("POST", "/admin/dlq/stuck", "GET"),
        ("GET", "/admin/dlq/stuck/retry", "POST"),
        ("GET", "/admin/dlq/stuck/drop", "POST"),
        ("POST", "/admin/breakers", "GET"),
        ("GET", "/admin/policy/reload", "POST"),
        ("POST", "/admin/audit/verify", "GET"),
    ],
)
async def test_a_wrong_method_is_405_and_changes_nothing(
    admin: Admin, method: str, path: str, allowed: str
) -> None:
    await seed(admin.store)
    before = await snapshot(admin.store)
    reply = await admin.call(method, path)
    refused(reply, 405, "method_not_allowed", f"{path} takes {allowed}, not {method}")
    assert admin.api.allowed(path) == (allowed,)  # the app's Allow header
    assert await snapshot(admin.store) == before


def test_a_path_no_route_has_allows_nothing(admin: Admin) -> None:
    assert admin.api.allowed("/admin/nope") == ()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/runs/live"),
        ("POST", "/admin/runs/live/kill"),
        ("GET", "/admin/dlq/stuck"),
        ("POST", "/admin/dlq/stuck/retry"),
        ("POST", "/admin/dlq/stuck/drop"),
        ("GET", "/admin/breakers"),
        ("POST", "/admin/policy/reload"),
        ("GET", "/admin/audit/verify"),
    ],
)
async def test_a_query_parameter_a_route_does_not_take_is_400(
    admin: Admin, method: str, path: str
) -> None:
    await seed(admin.store)
    before = await snapshot(admin.store)
    reply = await admin.call(method, path, {"verbose": "1"})
    refused(reply, 400, "invalid_request_error", "unknown query parameter 'verbose'")
    assert await snapshot(admin.store) == before


# --- runs ---------------------------------------------------------------------


async def test_list_runs_newest_first_with_every_filter(admin: Admin) -> None:
    await seed(admin.store)
    status, payload = await admin.get("/admin/runs")
    assert status == 200
    ids = [run["id"] for run in payload["runs"]]
    assert sorted(ids) == ["again", "bare", "done", "gone", "live", "orphan", "stuck"]

    async def listed(**query: str) -> list[str]:
        status, payload = await admin.get("/admin/runs", **query)
        assert status == 200, payload
        return sorted(run["id"] for run in payload["runs"])

    assert await listed(status="halted") == ["bare", "gone", "stuck"]
    assert await listed(status="running") == ["again", "live", "orphan"]
    assert await listed(agent="support") == sorted(ids)
    assert await listed(agent="summarizer") == []
    assert len(await listed(limit="2")) == 2
    assert await listed(session="nobody") == []


async def test_list_runs_by_session(admin: Admin) -> None:
    async with admin.sup.run(agent="support", session="s-1") as run:
        await run.checkpoint({"n": 1})
    status, payload = await admin.get("/admin/runs", session="s-1")
    assert status == 200
    assert [(r["id"], r["status"]) for r in payload["runs"]] == [(run.id, "completed")]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": "0"}, f"limit must be a whole number from 1 to {MAX_RUNS_LIMIT}, got '0'"),
        ({"limit": "-1"}, "limit must be a whole number"),
        ({"limit": "ten"}, "limit must be a whole number"),
        ({"limit": "2.5"}, "limit must be a whole number"),
        ({"limit": str(MAX_RUNS_LIMIT + 1)}, "limit must be a whole number"),
        ({"status": "lost"}, "status must be one of running, completed, halted, got 'lost'"),
        ({"stauts": "halted"}, "unknown query parameter 'stauts'"),
        # A blank filter is a mistake, never "no filter".
        ({"status": ""}, "query parameter 'status' is empty: give a value, or leave it out"),
        ({"agent": ""}, "query parameter 'agent' is empty"),
        ({"session": ""}, "query parameter 'session' is empty"),
        ({"limit": ""}, "query parameter 'limit' is empty"),
    ],
)
async def test_list_runs_refuses_a_bad_query(
    admin: Admin, query: dict[str, str], message: str
) -> None:
    refused(await admin.call("GET", "/admin/runs", query), 400, "invalid_request_error", message)


async def test_show_run_has_its_steps(admin: Admin) -> None:
    await seed(admin.store)
    await admin.store.add_steps(
        [
            StepRecord("live", 1, "llm", "fast", {"q": "hi"}, T0, T0 + 1, output={"a": "yo"}),
            StepRecord("live", 2, "tool", "get_customer", {"customer_id": 1}, T0 + 1, T0 + 2),
        ]
    )
    status, shown = await admin.get("/admin/runs/live")
    assert status == 200
    run = shown["run"]
    assert (run["id"], run["status"], run["agent"]) == ("live", "running", "support")
    assert [(s["seq"], s["kind"], s["name"]) for s in shown["steps"]] == [
        (1, "llm", "fast"),
        (2, "tool", "get_customer"),
    ]
    assert shown["steps"][0]["output"] == {"a": "yo"}


async def test_show_unknown_run_is_404(admin: Admin) -> None:
    refused(await admin.get("/admin/runs/ghost"), 404, "not_found", "no run 'ghost' in the store")


async def test_kill_marks_a_running_run_and_audits_it(admin: Admin) -> None:
    await seed(admin.store)
    status, payload = await admin.post("/admin/runs/live/kill")
    assert (status, payload) == (200, {"run_id": "live", "requested_at": NOW, "halted": False})
    assert await admin.store.kill_requests() == {"live": NOW}
    entries = await admin.store.list_audit()
    assert [(e.kind, e.run_id, e.payload) for e in entries] == [
        ("run.kill_requested", "live", {"requested_at": NOW})
    ]


async def test_kill_stops_a_supervised_run_in_flight(admin: Admin) -> None:
    """From the admin API through the store to the supervisor's kill watcher, which
    cancels the call in flight."""
    started = asyncio.Event()

    @admin.sup.tool()
    async def get_customer(customer_id: int) -> dict[str, int]:
        started.set()
        await asyncio.Event().wait()  # never answers: only the kill ends the call
        return {"id": customer_id}

    runs: list[Run] = []

    async def work() -> None:
        async with admin.sup.run(agent="support") as run:
            runs.append(run)
            await run.tool("get_customer", {"customer_id": 1})

    working = asyncio.create_task(work())
    await started.wait()
    [run] = runs
    assert (await admin.post(f"/admin/runs/{run.id}/kill"))[0] == 200
    with pytest.raises(Halted) as caught:
        async with asyncio.timeout(2):
            await working
    assert caught.value.reason is HaltReason.KILLED
    status, shown = await admin.get(f"/admin/runs/{run.id}")
    assert (status, shown["run"]["status"], shown["run"]["halt_reason"]) == (
        200,
        "halted",
        "killed",
    )


@pytest.mark.parametrize(
    ("run_id", "status", "kind", "message"),
    [
        ("ghost", 404, "not_found", "no run 'ghost' in the store"),
        ("stuck", 409, "conflict", "run 'stuck' is halted, not running"),
        ("done", 409, "conflict", "run 'done' is completed, not running"),
    ],
)
async def test_kill_refuses_unknown_and_ended_runs(
    admin: Admin, run_id: str, status: int, kind: str, message: str
) -> None:
    await seed(admin.store)
    before = await snapshot(admin.store)
    refused(await admin.post(f"/admin/runs/{run_id}/kill"), status, kind, message)
    assert await snapshot(admin.store) == before


async def test_kill_takes_no_body_but_an_empty_object(admin: Admin) -> None:
    await seed(admin.store)
    refused(
        await admin.post("/admin/runs/live/kill", {"now": True}),
        400,
        "invalid_request_error",
        "this route takes no request body",
    )
    assert await admin.store.kill_requests() == {}
    assert (await admin.post("/admin/runs/live/kill", {}))[0] == 200


# --- dead letters ---------------------------------------------------------------


async def test_list_dead_letters_open_by_default_and_by_status(admin: Admin) -> None:
    await seed(admin.store)

    async def listed(**query: str) -> list[tuple[str, str]]:
        status, payload = await admin.get("/admin/dlq", **query)
        assert status == 200, payload
        assert all("packet" not in d for d in payload["dead_letters"])
        return [(d["run_id"], d["status"]) for d in payload["dead_letters"]]

    assert await listed() == [("stuck", "open")]
    assert await listed(status="retried") == [("again", "retried")]
    assert await listed(status="dropped") == [("gone", "dropped")]
    assert await listed(status="all") == [
        ("stuck", "open"),
        ("again", "retried"),
        ("gone", "dropped"),
    ]


async def test_list_dead_letters_refuses_a_bad_status(admin: Admin) -> None:
    reply = await admin.get("/admin/dlq", status="lost")
    refused(reply, 400, "invalid_request_error", "status must be one of open, retried, dropped")
    refused(await admin.get("/admin/dlq", status=""), 400, "invalid_request_error", "'status'")


async def test_show_dead_letter_has_its_packet(admin: Admin) -> None:
    dead = await halt(admin.store, "stuck")
    status, shown = await admin.get("/admin/dlq/stuck")
    assert status == 200
    assert (shown["id"], shown["reason"], shown["status"]) == (dead.id, "budget.cost", "open")
    assert shown["packet"] == PACKET


@pytest.mark.parametrize(
    ("run_id", "message"),
    [
        ("ghost", "no run 'ghost' in the store"),
        ("live", "run 'live' has no dead letter (it is running)"),
    ],
)
async def test_show_dead_letter_of_an_unknown_run_or_none_is_404(
    admin: Admin, run_id: str, message: str
) -> None:
    await seed(admin.store)
    refused(await admin.get(f"/admin/dlq/{run_id}"), 404, "not_found", message)


async def test_retry_with_every_topup_reopens_the_run_and_audits_it(admin: Admin) -> None:
    dead = await halt(admin.store, "stuck")
    body = {
        "add_usd": 0.2,
        "add_tokens": 5000,
        "add_tool_calls": 5,
        "add_steps": 10,
        "add_wall_clock": "10m",
    }
    status, retried = await admin.post("/admin/dlq/stuck/retry", body)
    topup = {"usd": 0.2, "tokens": 5000, "tool_calls": 5, "steps": 10, "wall_clock": 600.0}
    assert status == 200, retried
    assert (retried["run_id"], retried["dead_letter_id"], retried["topup"]) == (
        "stuck",
        dead.id,
        topup,
    )
    assert (retried["run"]["status"], retried["run"]["topup"]) == ("running", topup)
    settled = await admin.store.get_dead_letter(dead.id)
    assert settled is not None and settled.status == "retried"
    entries = await admin.store.list_audit()
    assert [(e.kind, e.run_id, e.payload) for e in entries] == [
        ("dlq.retry", "stuck", {"topup": topup, "dead_letter": dead.id})
    ]


@pytest.mark.parametrize("body", [None, {}])
async def test_retry_without_a_topup(admin: Admin, body: Any) -> None:
    await halt(admin.store, "stuck")
    status, retried = await admin.post("/admin/dlq/stuck/retry", body)
    assert status == 200, retried
    assert retried["topup"] == {} and retried["run"]["topup"] is None


async def test_retry_takes_usd_as_text_too(admin: Admin) -> None:
    await halt(admin.store, "stuck")
    status, retried = await admin.post("/admin/dlq/stuck/retry", {"add_usd": "0.25"})
    assert (status, retried["topup"]) == (200, {"usd": 0.25})


async def test_a_retried_supervised_run_resumes_with_its_topup(admin: Admin) -> None:
    """The whole loop over the admin API: a run halts on its tool-call budget, shows up in
    the queue with its steps, is retried with more tool calls and resumes to the end."""
    path = admin.policy
    path.write_text(path.read_text().replace("tool_calls: 50", "tool_calls: 2"))
    assert (await admin.post("/admin/policy/reload"))[0] == 200

    @admin.sup.tool()
    async def get_customer(customer_id: int) -> dict[str, int]:
        return {"id": customer_id}

    with pytest.raises(Halted) as caught:
        async with admin.sup.run(agent="support", task="many lookups") as run:
            for n in range(5):
                await run.tool("get_customer", {"customer_id": n})
                await run.checkpoint({"done": n + 1})
    assert caught.value.reason is HaltReason.BUDGET_TOOL_CALLS

    _, queue = await admin.get("/admin/dlq")
    assert [(d["run_id"], d["reason"]) for d in queue["dead_letters"]] == [
        (run.id, "budget.tool_calls")
    ]
    _, shown = await admin.get(f"/admin/runs/{run.id}")
    assert [s["name"] for s in shown["steps"] if s["status"] == "ok"] == ["get_customer"] * 2

    status, retried = await admin.post(f"/admin/dlq/{run.id}/retry", {"add_tool_calls": 3})
    assert status == 200, retried
    async with admin.sup.resume(run.id) as resumed:
        for n in range(resumed.state["done"], 5):
            await resumed.tool("get_customer", {"customer_id": n})
    _, done = await admin.get(f"/admin/runs/{run.id}")
    assert (done["run"]["status"], done["run"]["tool_calls"]) == ("completed", 5)
    assert (await admin.get("/admin/audit/verify"))[0] == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1], "the body must be a JSON object of top-ups"),
        ("0.2", "the body must be a JSON object of top-ups"),
        ({"usd": 0.2}, "unknown top-up option 'usd': expected add_usd, add_tokens"),
        ({"add_usd": -0.5}, "add_usd: expected a non-negative amount in USD like 0.20"),
        ({"add_usd": "lots"}, "add_usd: expected a non-negative amount in USD"),
        ({"add_usd": "nan"}, "add_usd: expected a non-negative amount in USD"),
        ({"add_usd": True}, "add_usd: expected a non-negative amount in USD"),
        ({"add_tokens": -5}, "add_tokens: expected a non-negative whole number, got -5"),
        ({"add_tokens": 1.5}, "add_tokens: expected a non-negative whole number"),
        ({"add_tokens": "5"}, "add_tokens: expected a non-negative whole number"),
        ({"add_steps": True}, "add_steps: expected a non-negative whole number, got True"),
        ({"add_tool_calls": None, "add_steps": [2]}, "add_steps: expected a non-negative"),
        ({"add_wall_clock": "10"}, "add_wall_clock: expected a duration like 500ms"),
        ({"add_wall_clock": 600}, "add_wall_clock: expected a duration like 500ms"),
        ({"add_wall_clock": "-5m"}, "add_wall_clock: expected a duration"),
    ],
)
async def test_retry_refuses_a_bad_body_and_changes_nothing(
    admin: Admin, body: Any, message: str
) -> None:
    await seed(admin.store)
    before = await snapshot(admin.store)
    reply = await admin.post("/admin/dlq/stuck/retry", body)
    refused(reply, 400, "invalid_request_error", message)
    assert await snapshot(admin.store) == before


@pytest.mark.parametrize(
    ("run_id", "status", "kind", "message"),
    [
        ("ghost", 404, "not_found", "no run 'ghost' in the store"),
        ("bare", 404, "not_found", "run 'bare' is halted but has no dead letter to retry"),
        ("live", 409, "conflict", "run 'live' is running, not halted"),
        ("again", 409, "conflict", "run 'again' is running, not halted"),
        ("gone", 409, "conflict", "run 'gone' was dropped from the dead-letter queue"),
    ],
)
async def test_retry_refuses_a_run_in_the_wrong_state(
    admin: Admin, run_id: str, status: int, kind: str, message: str
) -> None:
    await seed(admin.store)
    before = await snapshot(admin.store)
    reply = await admin.post(f"/admin/dlq/{run_id}/retry", {"add_usd": 0.1})
    refused(reply, status, kind, message)
    assert await snapshot(admin.store) == before


async def test_drop_settles_the_open_dead_letter_and_audits_it(admin: Admin) -> None:
    dead = await halt(admin.store, "stuck")
    status, dropped = await admin.post("/admin/dlq/stuck/drop")
    assert (status, dropped) == (
        200,
        {"run_id": "stuck", "dead_letter_id": dead.id, "status": "dropped"},
    )
    settled = await admin.store.get_dead_letter(dead.id)
    assert settled is not None and settled.status == "dropped"
    still = await admin.store.get_run("stuck")
    assert still is not None and still.status is RunStatus.HALTED
    entries = await admin.store.list_audit()
    assert [(e.kind, e.run_id, e.payload) for e in entries] == [
        ("dlq.drop", "stuck", {"dead_letter": dead.id})
    ]
    # Dropped is final: a retry is refused from now on.
    refused(await admin.post("/admin/dlq/stuck/retry"), 409, "conflict", "was dropped")


@pytest.mark.parametrize(
    ("run_id", "status", "kind", "message"),
    [
        ("ghost", 404, "not_found", "no run 'ghost' in the store"),
        ("live", 404, "not_found", "run 'live' has no dead letter to drop (it is running)"),
        ("again", 409, "conflict", "nothing open to drop: its dead letter"),
        ("gone", 409, "conflict", "nothing open to drop: its dead letter"),
    ],
)
async def test_drop_refuses_what_is_not_open(
    admin: Admin, run_id: str, status: int, kind: str, message: str
) -> None:
    await seed(admin.store)
    before = await snapshot(admin.store)
    refused(await admin.post(f"/admin/dlq/{run_id}/drop"), status, kind, message)
    assert await snapshot(admin.store) == before


async def test_drop_names_what_became_of_the_dead_letter(admin: Admin) -> None:
    await seed(admin.store)
    dead = await admin.store.dead_letter_for_run("again")
    assert isinstance(dead, DeadLetterRecord)
    reply = await admin.post("/admin/dlq/again/drop")
    refused(reply, 409, "conflict", f"its dead letter {dead.id} was already retried")


# --- breakers ---------------------------------------------------------------------


async def test_breakers_empty_then_listed_with_their_state(admin: Admin) -> None:
    assert await admin.get("/admin/breakers") == (200, {"breakers": []})
    counters = admin.sup.counters
    settings = breaker_settings(Breaker(window=4, min_calls=2))
    for failed in (True, True):
        admission = await counters.breaker_admit("breaker:sim:gpt-4o", NOW - 10, settings)
        await counters.breaker_record(
            "breaker:sim:gpt-4o", admission, failed=failed, slow=False, now=NOW - 10,
            settings=settings,
        )  # fmt: skip
    status, payload = await admin.get("/admin/breakers")
    assert status == 200
    [row] = payload["breakers"]
    assert (row["provider"], row["model"], row["state"]) == ("sim", "gpt-4o", "open")
    assert (row["calls"], row["failure_rate"]) == (2, 1.0)
    assert row["half_open_in"] == pytest.approx(settings.open_for - 10)


# --- policy reload ----------------------------------------------------------------


async def test_reload_swaps_in_the_edited_policy_and_audits_it(admin: Admin) -> None:
    before = admin.sup.policy.current
    text = admin.policy.read_text()
    admin.policy.write_text(text.replace("  summarizer:", "  triage:"))
    status, payload = await admin.post("/admin/policy/reload")
    assert status == 200, payload
    assert payload == {
        "reloaded": True,
        "source": str(admin.policy),
        "agents": ["analyzer", "support", "triage", "verifier"],
        "models": ["fast", "smart"],
        "routes": ["default"],
        "restart_required_for": [],
    }
    assert admin.sup.policy.current is not before
    assert sorted(admin.sup.policy.current.agents) == payload["agents"]
    entries = await admin.store.list_audit()
    assert [(e.kind, e.payload) for e in entries] == [
        ("policy.reloaded", {"source": str(admin.policy)})
    ]


async def test_reload_says_a_new_store_waits_for_a_restart(admin: Admin) -> None:
    text = admin.policy.read_text()
    admin.policy.write_text(text.replace("/corral.db", "/elsewhere.db"))
    status, payload = await admin.post("/admin/policy/reload")
    assert (status, payload["restart_required_for"]) == (200, ["store"])


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("version: 1\nretry: {max_delay: 8}\n", 2, "retry.max_delay: expected a duration"),
        ("version: 1\nagents: [\n", 3, "invalid YAML"),
        (None, 0, "cannot read"),
    ],
)
async def test_a_refused_reload_keeps_the_policy_in_force(
    admin: Admin, text: str | None, line: int, message: str
) -> None:
    before = admin.sup.policy.current
    if text is None:
        admin.policy.unlink()
    else:
        admin.policy.write_text(text)
    status, payload = await admin.post("/admin/policy/reload")
    assert status == 422, payload
    assert (payload["reloaded"], payload["source"]) == (False, str(admin.policy))
    assert payload["error"]["type"] == "invalid_policy"
    assert message in payload["error"]["message"]
    assert str(admin.policy) in payload["error"]["message"]
    assert [issue["line"] for issue in payload["error"]["issues"]] == [line]
    assert admin.sup.policy.current is before
    assert await admin.store.list_audit() == []


async def test_reload_takes_no_body(admin: Admin) -> None:
    before = admin.sup.policy.current
    refused(await admin.post("/admin/policy/reload", [1]), 400, "invalid_request_error")
    assert admin.sup.policy.current is before


# --- audit ------------------------------------------------------------------------


async def test_audit_verify_intact_then_broken(admin: Admin) -> None:
    assert await admin.get("/admin/audit/verify") == (200, {"ok": True, "entries": 0})
    for n in range(3):
        await admin.sup.audit.append("step", {"n": n}, "run_a")
    assert await admin.get("/admin/audit/verify") == (200, {"ok": True, "entries": 3})

    with sqlite3.connect(admin.policy.parent / "corral.db") as conn:
        conn.execute("UPDATE audit SET kind = 'forged' WHERE seq = 2")
    status, payload = await admin.get("/admin/audit/verify")
    assert status == 409
    assert (payload["ok"], payload["entries"], payload["broken_at"]) == (False, 1, 2)
    assert payload["reason"] == "entry 2: content does not match its hash (the entry was edited)"
    assert payload["error"]["type"] == "audit_chain_broken"
    assert payload["reason"] in payload["error"]["message"]


async def test_audit_verify_catches_entries_cut_off_the_end(admin: Admin) -> None:
    for n in range(2):
        await admin.sup.audit.append("step", {"n": n})
    with sqlite3.connect(admin.policy.parent / "corral.db") as conn:
        conn.execute("DELETE FROM audit WHERE seq = 2")
    status, payload = await admin.get("/admin/audit/verify")
    assert (status, payload["ok"], payload["broken_at"]) == (409, False, 2)
    assert "entries were deleted from the end" in payload["reason"]
