"""The gateway's admin API: the operator actions of corral.runtime.operations and the
reviewer's of corral.runtime.review over HTTP.

The app authenticates the admin key, decodes the JSON body and parses the query string,
then hands the request here; `AdminAPI.handle` routes it and returns the status and the
JSON payload. Errors are `{"error": {"type": ..., "message": ...}}`, typed by what the
caller should do: fix the request (400 invalid_request_error), look elsewhere (404
not_found), use another method (405 method_not_allowed), or deal with the state the
record is in (409 conflict: a run or dead letter in the wrong state, an approval decided
already or timed out, a proposal reviewed already). Two routes answer a refusal with
more: a policy reload that keeps the old policy (422 invalid_policy, with each issue by
line) and an audit check that finds the chain broken (409 audit_chain_broken, with the
first broken entry).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from corral.policy import LivePolicy
from corral.runtime import operations, review
from corral.runtime.operations import InvalidArgument, NotFound, StateConflict
from corral.state import Counters, Store
from corral.telemetry.audit import AuditLog

Reply = tuple[int, Any]
# The most runs one listing returns: a bound on what one request makes the store read.
MAX_RUNS_LIMIT = 1000


def error(status: int, type: str, message: str) -> Reply:
    return status, {"error": {"type": type, "message": message}}


class BadRequest(InvalidArgument):
    """The query or body is not what the route takes."""


@dataclass(frozen=True, slots=True)
class Request:
    """A routed request: the path's {placeholder} segments by name, the query, the body,
    and who sends it (the name the audit log gives a reviewer's decision)."""

    params: Mapping[str, str]
    query: Mapping[str, str]
    body: Any
    by: str


Handler = Callable[["AdminAPI", Request], Awaitable[Reply]]


def _split(path: str) -> tuple[str, ...]:
    return tuple(path.removeprefix("/").split("/"))


def _match(template: tuple[str, ...], parts: tuple[str, ...]) -> dict[str, str] | None:
    """The placeholder values if `parts` fits the template, else None; a placeholder takes
    one whole non-empty segment."""
    if len(template) != len(parts):
        return None
    params: dict[str, str] = {}
    for want, got in zip(template, parts, strict=True):
        if want.startswith("{"):
            if not got:
                return None
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params


def _only(query: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    """Refuse query parameters the route does not take, and empty ones: a misspelt or
    blank filter must not quietly list everything."""
    for name, value in query.items():
        if name not in allowed:
            takes = f"takes {', '.join(allowed)}" if allowed else "takes no query parameters"
            raise BadRequest(f"unknown query parameter {name!r}: this route {takes}")
        if not value:
            raise BadRequest(f"query parameter {name!r} is empty: give a value, or leave it out")


def _no_body(body: Any) -> None:
    # An empty object is what many clients send for "no body"; anything else is a mistake.
    if body is not None and body != {}:
        raise BadRequest("this route takes no request body")


def _fields(body: Any, takes: tuple[str, ...], example: str) -> Mapping[str, Any]:
    """The body as an object of the fields the route takes (none: an empty one); a
    misspelt field is refused, not ignored."""
    fields = {} if body is None else body
    if not isinstance(fields, dict):
        raise BadRequest(f"the body must be a JSON object, e.g. {example}")
    for name in fields:
        if name not in takes:
            raise BadRequest(f"unknown body field {name!r}: this route takes {', '.join(takes)}")
    return fields


def _text(fields: Mapping[str, Any], name: str) -> str | None:
    """A string field of the body; absent or null is None."""
    value = fields.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{name} must be a string, got {type(value).__name__}")
    return value


class AdminAPI:
    """Routes /admin/ requests to the operations on the gateway's store, audit log,
    policy and counters. `clock` gives the times kills, retries and decisions are stamped
    with; `on_decided` is told each approval decided here, to wake the call waiting on it
    in this process at once."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        policy: LivePolicy,
        counters: Counters,
        clock: Callable[[], float] = time.time,
        *,
        on_decided: review.OnDecided | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._policy = policy
        self._counters = counters
        self._clock = clock
        self._on_decided = on_decided
        # The store and counters are opened once, from the policy the process started
        # with; a reload that names others takes effect only on restart, and says so.
        started = policy.current
        self._opened = {"store": started.store, "counters": started.counters}
        self._reloading = asyncio.Lock()
        self._table = tuple((_split(template), methods) for template, methods in self.ROUTES)

    async def handle(
        self, method: str, path: str, query: Mapping[str, str], body: Any, *, by: str = "admin"
    ) -> tuple[int, Any]:
        """(HTTP status, JSON-ready payload) for one request to an /admin/ path; `by` names
        the caller (its key) in the audit entries of the decisions it makes."""
        route = self._route(path)
        if route is None:
            return error(404, "not_found", f"no admin route {path}")
        params, methods = route
        handler = methods.get(method)
        if handler is None:
            allowed = " or ".join(methods)
            return error(405, "method_not_allowed", f"{path} takes {allowed}, not {method}")
        # Only the operations' own refusals are answered here: anything else is a
        # fault of the gateway, for the app to answer as one.
        try:
            return await handler(self, Request(params, query, body, by))
        except NotFound as exc:
            return error(404, "not_found", str(exc))
        except StateConflict as exc:
            return error(409, "conflict", str(exc))
        except InvalidArgument as exc:
            return error(400, "invalid_request_error", str(exc))

    def allowed(self, path: str) -> tuple[str, ...]:
        """The methods an /admin/ path takes (none for a path no route has): a 405's Allow."""
        route = self._route(path)
        return tuple(route[1]) if route is not None else ()

    def _route(self, path: str) -> tuple[dict[str, str], Mapping[str, Handler]] | None:
        parts = _split(path)
        for template, methods in self._table:
            params = _match(template, parts)
            if params is not None:
                return params, methods
        return None

    # --- runs ----------------------------------------------------------------

    async def _list_runs(self, request: Request) -> Reply:
        query = request.query
        _only(query, ("status", "agent", "session", "limit"))
        limit = _limit(query.get("limit"))
        runs = await operations.list_runs(
            self._store,
            limit=limit,
            status=query.get("status"),
            agent=query.get("agent"),
            session=query.get("session"),
        )
        return 200, {"runs": runs}

    async def _show_run(self, request: Request) -> Reply:
        _only(request.query, ())
        return 200, await operations.show_run(self._store, request.params["run_id"])

    async def _kill_run(self, request: Request) -> Reply:
        _only(request.query, ())
        _no_body(request.body)
        run_id = request.params["run_id"]
        return 200, await operations.kill_run(self._store, self._audit, run_id, now=self._clock())

    # --- dead letters --------------------------------------------------------

    async def _list_dead_letters(self, request: Request) -> Reply:
        _only(request.query, ("status",))
        status = request.query.get("status", "open")
        return 200, {"dead_letters": await operations.list_dead_letters(self._store, status=status)}

    async def _show_dead_letter(self, request: Request) -> Reply:
        _only(request.query, ())
        return 200, await operations.show_dead_letter(self._store, request.params["run_id"])

    async def _retry_dead_letter(self, request: Request) -> Reply:
        _only(request.query, ())
        body = {} if request.body is None else request.body
        if not isinstance(body, dict):
            raise BadRequest(
                "the body must be a JSON object of top-ups, e.g. "
                '{"add_usd": 0.2, "add_wall_clock": "10m"}, or empty'
            )
        topup = operations.topup_from(body)
        run_id = request.params["run_id"]
        retried = await operations.retry_dead_letter(
            self._store, self._audit, run_id, topup=topup, now=self._clock()
        )
        return 200, retried

    async def _drop_dead_letter(self, request: Request) -> Reply:
        _only(request.query, ())
        _no_body(request.body)
        run_id = request.params["run_id"]
        return 200, await operations.drop_dead_letter(self._store, self._audit, run_id)

    # --- approvals -----------------------------------------------------------

    async def _list_approvals(self, request: Request) -> Reply:
        _only(request.query, ("status",))
        status = request.query.get("status", "pending")
        return 200, {"approvals": await review.list_approvals(self._store, status=status)}

    async def _show_approval(self, request: Request) -> Reply:
        _only(request.query, ())
        return 200, await review.show_approval(self._store, request.params["approval_id"])

    async def _approve(self, request: Request) -> Reply:
        _only(request.query, ())
        body = _fields(
            request.body, ("note", "args"), '{"note": "checked"} or {"args": {"to": "x"}}'
        )
        decided = await review.approve(
            self._store,
            self._audit,
            request.params["approval_id"],
            by=request.by,
            now=self._clock(),
            note=_text(body, "note"),
            args=body.get("args"),
            on_decided=self._on_decided,
        )
        return 200, decided

    async def _reject(self, request: Request) -> Reply:
        _only(request.query, ())
        example = '{"feedback": "ask the customer first"}'
        feedback = _text(_fields(request.body, ("feedback",), example), "feedback")
        if feedback is None:
            raise BadRequest(f"a rejection needs feedback for the agent: send {example}")
        decided = await review.reject(
            self._store,
            self._audit,
            request.params["approval_id"],
            by=request.by,
            now=self._clock(),
            feedback=feedback,
            on_decided=self._on_decided,
        )
        return 200, decided

    # --- shadow proposals ----------------------------------------------------

    async def _list_proposals(self, request: Request) -> Reply:
        _only(request.query, ("agent",))
        agent = request.query.get("agent")
        return 200, {"proposals": await review.list_proposals(self._store, agent=agent)}

    async def _shadow_report(self, request: Request) -> Reply:
        _only(request.query, ("agent",))
        agent = request.query.get("agent")
        return 200, {"report": await review.shadow_report(self._store, agent=agent)}

    async def _review_proposal(self, request: Request) -> Reply:
        _only(request.query, ())
        example = '{"verdict": "agree", "note": "right call"}'
        body = _fields(request.body, ("verdict", "note"), example)
        verdict = _text(body, "verdict")
        if verdict is None:
            raise BadRequest(f"a review needs a verdict, agree or disagree: send {example}")
        reviewed = await review.review_proposal(
            self._store,
            self._audit,
            request.params["proposal_id"],
            verdict,
            by=request.by,
            now=self._clock(),
            note=_text(body, "note"),
        )
        return 200, reviewed

    # --- breakers, policy, audit ---------------------------------------------

    async def _breakers(self, request: Request) -> Reply:
        _only(request.query, ())
        rows = await operations.list_breakers(self._counters, now=self._clock())
        return 200, {"breakers": rows}

    async def _reload_policy(self, request: Request) -> Reply:
        """Swap in the policy file as it is now, or keep the one in force if it is refused."""
        _only(request.query, ())
        _no_body(request.body)
        async with self._reloading:  # two reloads at once would race to say what is in force
            # Off the event loop: parsing the file and compiling its rules would stall
            # every call in flight meanwhile.
            outcome = await asyncio.to_thread(self._policy.reload)
        source = str(self._policy.path)
        if outcome.error is not None:
            issues = [
                {"line": issue.line, "path": issue.path, "message": issue.message}
                for issue in outcome.error.issues
            ]
            refusal = {"type": "invalid_policy", "message": str(outcome.error), "issues": issues}
            return 422, {"error": refusal, "reloaded": False, "source": source}
        policy = outcome.policy
        await self._audit.append("policy.reloaded", {"source": source})
        return 200, {
            "reloaded": True,
            "source": source,
            "agents": sorted(policy.agents),
            "models": sorted(policy.models),
            "routes": sorted(policy.routes),
            "restart_required_for": [
                name for name, opened in self._opened.items() if getattr(policy, name) != opened
            ],
        }

    async def _verify_audit(self, request: Request) -> Reply:
        _only(request.query, ())
        result = await operations.verify_audit(self._audit)
        if result["ok"]:
            return 200, result
        # The error envelope every failure has, beside the figures a script reads.
        broken = {
            "type": "audit_chain_broken",
            "message": f"audit chain broken at {result['reason']}",
        }
        return 409, {**result, "error": broken}

    # Every route: its path, with {placeholders} for one segment each, and the handler of
    # each method it takes. The OpenAPI document lists the same routes (a test holds
    # them together).
    ROUTES: ClassVar[tuple[tuple[str, Mapping[str, Handler]], ...]] = (
        ("/admin/runs", {"GET": _list_runs}),
        ("/admin/runs/{run_id}", {"GET": _show_run}),
        ("/admin/runs/{run_id}/kill", {"POST": _kill_run}),
        ("/admin/dlq", {"GET": _list_dead_letters}),
        ("/admin/dlq/{run_id}", {"GET": _show_dead_letter}),
        ("/admin/dlq/{run_id}/retry", {"POST": _retry_dead_letter}),
        ("/admin/dlq/{run_id}/drop", {"POST": _drop_dead_letter}),
        ("/admin/approvals", {"GET": _list_approvals}),
        ("/admin/approvals/{approval_id}", {"GET": _show_approval}),
        ("/admin/approvals/{approval_id}/approve", {"POST": _approve}),
        ("/admin/approvals/{approval_id}/reject", {"POST": _reject}),
        ("/admin/shadow", {"GET": _list_proposals}),
        ("/admin/shadow/report", {"GET": _shadow_report}),
        ("/admin/shadow/{proposal_id}/review", {"POST": _review_proposal}),
        ("/admin/breakers", {"GET": _breakers}),
        ("/admin/policy/reload", {"POST": _reload_policy}),
        ("/admin/audit/verify", {"GET": _verify_audit}),
    )


def _limit(text: str | None) -> int:
    if text is None:
        return 50
    if not text.isdigit() or not 1 <= int(text) <= MAX_RUNS_LIMIT:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_RUNS_LIMIT}, got {text!r}")
    return int(text)
