"""The gateway's OpenAPI 3.1 document, served at GET /openapi.json.

Model-call bodies are described loosely (the main fields, everything else passed to the
upstream as-is): the OpenAI and Anthropic references own those formats. What Corral adds
is described exactly: the halt error, the X-Corral-* headers and the admin API. Streamed
answers are text/event-stream, each event's data one JSON object of the schema its
description names. The document is built once at import; the app serves its bytes.
"""

from __future__ import annotations

from typing import Any

from corral import __version__
from corral.calls import RunStatus
from corral.gateway.openapi_schemas import (
    _ANY_OBJECT,
    _NAME,
    _SCHEMAS,
    _STRING,
    Schema,
    _answer,
    _json,
    _object,
    _ref,
    _schema,
)
from corral.runtime.operations import DEAD_LETTER_FILTERS
from corral.runtime.review import APPROVAL_FILTERS

# --- headers, parameters, responses -------------------------------------------------

_HEADERS: dict[str, Schema] = {
    "X-Corral-Run": {
        "description": "The run the request was counted to: the session's, or a run of its own.",
        "schema": _STRING,
    },
    "X-Corral-Budget-Remaining-Usd": {
        "description": "USD the tightest USD cap on the run still allows; absent if none applies.",
        "schema": {"type": "string", "pattern": r"^\d+\.\d{6}$"},
    },
    "X-Corral-Overhead-Ms": {
        "description": "Milliseconds the gateway added on top of the upstream's time (not "
        "counting pauses between retries, nor time waiting for a human).",
        "schema": {"type": "string", "pattern": r"^\d+\.\d{3}$"},
    },
    "X-Corral-Retry-Wait-Ms": {
        "description": "Milliseconds spent waiting between retries of the upstream call.",
        "schema": {"type": "string", "pattern": r"^\d+\.\d{3}$"},
    },
    "traceparent": {
        "description": "The W3C trace context of the gateway's span for this request.",
        "schema": {"type": "string", "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    },
    "X-Corral-Request-Id": {
        "description": "The id the gateway's log and the audit entry (gateway.error) of the "
        "failure carry.",
        "schema": _STRING,
    },
    "Allow": {"description": "The methods the path takes.", "schema": _STRING},
}

_PARAMETERS: dict[str, Schema] = {
    "Session": {
        "name": "X-Corral-Session",
        "in": "header",
        "required": False,
        "description": "Count requests with the same value to one run, so session budgets "
        "and loop detection span them; without it each request is a run of its own.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    },
    "Task": {
        "name": "X-Corral-Task",
        "in": "header",
        "required": False,
        "description": "The task the run works on, recorded with it.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    },
    "ParentRun": {
        "name": "X-Corral-Parent-Run",
        "in": "header",
        "required": False,
        "description": "The run that started this one (an agent of the same team, else 403 "
        "policy.denied): a link for traces and the agent graph.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    },
    "Outcome": {
        "name": "X-Corral-Outcome",
        "in": "header",
        "required": False,
        "description": "The run's outcome, on its last request: the run completes with it "
        "after the answer (the agent type's failure_outcomes make it no success).",
        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    },
    "Traceparent": {
        "name": "traceparent",
        "in": "header",
        "required": False,
        "description": "W3C trace context: the request's trace continues the client's.",
        "schema": _STRING,
    },
    "RunId": {
        "name": "run_id",
        "in": "path",
        "required": True,
        "description": "The run's id.",
        "schema": _STRING,
    },
    "ApprovalId": {
        "name": "approval_id",
        "in": "path",
        "required": True,
        "description": "The approval's id.",
        "schema": _STRING,
    },
    "ProposalId": {
        "name": "proposal_id",
        "in": "path",
        "required": True,
        "description": "The shadow proposal's id.",
        "schema": _STRING,
    },
}

_RUN_HEADERS = {name: _ref("headers", name) for name in ("X-Corral-Run",)}
_ANSWER_HEADERS = {
    name: _ref("headers", name)
    for name in (
        "X-Corral-Run",
        "X-Corral-Budget-Remaining-Usd",
        "X-Corral-Overhead-Ms",
        "X-Corral-Retry-Wait-Ms",
        "traceparent",
    )
}

_RESPONSES: dict[str, Schema] = {
    "BadRequest": _answer("The request is malformed or names a bad value.", _schema("Error")),
    "Unauthorized": _answer("No key, or an unknown, revoked or expired one.", _schema("Error")),
    "AdminForbidden": _answer("The key is not an admin key.", _schema("Error")),
    "NotFound": _answer(
        "No such run, approval or proposal, or the run has no dead letter.", _schema("Error")
    ),
    "Conflict": _answer(
        "The run or dead letter is in the wrong state, the approval was decided already or "
        "timed out, or the proposal was reviewed already.",
        _schema("Error"),
    ),
    "TooLarge": _answer("The request body is over the gateway's limit.", _schema("Error")),
    "NotJson": _answer(
        "The body's Content-Type is not JSON (application/json or application/*+json, "
        "UTF-8); a body without one is read as JSON.",
        _schema("Error"),
    ),
    "Internal": _answer(
        "A fault of the gateway's own, logged and audited under the request id; a run the "
        "request was in is named.",
        _schema("Error"),
        **{name: _ref("headers", name) for name in ("X-Corral-Request-Id", "X-Corral-Run")},
    ),
    "RateLimited": _answer(
        "The agent's rate limit would make the request wait past its max_wait.",
        _schema("Error"),
        **{"Retry-After": _ref("headers", "Retry-After")},
    ),
    "Upstream": _answer(
        "No model on the route answered: 502, 503 (breaker open or the upstream is "
        "refusing load) or 504 (timed out).",
        _schema("Error"),
        **_RUN_HEADERS,
    ),
}


def _chat_operation(
    operation_id: str, summary: str, request: str, answer: str, event: str, tag: str
) -> Schema:
    """A model-call route: its body, the streamed or whole answer, and every refusal. The
    stream's schema is that of one event, as OpenAPI 3.1 tools read text/event-stream."""
    return {
        "tags": [tag],
        "operationId": operation_id,
        "summary": summary,
        "security": _KEYED,
        "parameters": [
            _ref("parameters", name)
            for name in ("Session", "Task", "ParentRun", "Outcome", "Traceparent")
        ],
        "requestBody": {"required": True, "content": _json(_schema(request))},
        "responses": {
            "200": {
                "description": "The answer: JSON, or server-sent events with stream: true.",
                "headers": _ANSWER_HEADERS,
                "content": {
                    **_json(_schema(answer)),
                    "text/event-stream": {"schema": _schema(event)},
                },
            },
            "400": _ref("responses", "BadRequest"),
            "401": _ref("responses", "Unauthorized"),
            "403": _answer(
                "The run halted (corral_halt, not worth retrying), or the key's agent is "
                "not in the policy.",
                {"anyOf": [_schema("CorralHalt"), _schema("Error")]},
                **_RUN_HEADERS,
            ),
            "404": _answer(
                "The model is neither a model nor a route of the policy.", _schema("Error")
            ),
            "413": _ref("responses", "TooLarge"),
            "415": _ref("responses", "NotJson"),
            "429": _ref("responses", "RateLimited"),
            "500": _ref("responses", "Internal"),
            "502": _ref("responses", "Upstream"),
            "503": _ref("responses", "Upstream"),
            "504": _ref("responses", "Upstream"),
        },
    }


_NOT_FOUND = _ref("responses", "NotFound")
_CONFLICT = _ref("responses", "Conflict")


def _admin(
    operation_id: str,
    summary: str,
    answer: Schema,
    *,
    errors: dict[str, Schema] | None = None,
    path: str | None = None,
    query: list[Schema] | None = None,
    body: Schema | None = None,
) -> Schema:
    """An admin route; `path` names the parameter of its {placeholder}, if it has one.
    Every one refuses a query parameter it does not take (400) and a key that is not the
    admin key (401, 403)."""
    operation: Schema = {
        "tags": ["admin"],
        "operationId": operation_id,
        "summary": summary,
        "security": _KEYED,
    }
    parameters = ([_ref("parameters", path)] if path else []) + (query or [])
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = body
    operation["responses"] = {
        "200": answer,
        "400": _ref("responses", "BadRequest"),
        **(errors or {}),
        "401": _ref("responses", "Unauthorized"),
        "403": _ref("responses", "AdminForbidden"),
        **({"415": _ref("responses", "NotJson")} if body is not None else {}),
        "500": _ref("responses", "Internal"),
    }
    return operation


def _query(name: str, description: str, schema: Schema) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


# An agent key for the model calls, an admin key for /admin/; either way it is sent as
# a bearer token or in x-api-key, as the two client SDKs do. Open routes declare none.
_KEYED: list[Schema] = [{"bearer": []}, {"apiKey": []}]


def _build() -> dict[str, Any]:
    paths: dict[str, Schema] = {
        "/v1/chat/completions": {
            "post": _chat_operation(
                "createChatCompletion",
                "A model call in OpenAI's Chat Completions format, through the policy's gates.",
                "ChatCompletionRequest",
                "ChatCompletion",
                "ChatCompletionEvent",
                "openai",
            )
        },
        "/v1/messages": {
            "post": _chat_operation(
                "createMessage",
                "A model call in Anthropic's Messages format, through the policy's gates.",
                "MessagesRequest",
                "Message",
                "MessageStreamEvent",
                "anthropic",
            )
        },
        "/v1/models": {
            "get": {
                "tags": ["openai", "anthropic"],
                "operationId": "listModels",
                "summary": "The policy's models and routes.",
                "security": _KEYED,
                "parameters": [
                    {
                        "name": "anthropic-version",
                        "in": "header",
                        "required": False,
                        "description": "Present: list in Anthropic's shape.",
                        "schema": _STRING,
                    }
                ],
                "responses": {
                    "200": _answer("The listing.", _schema("ModelList")),
                    "401": _ref("responses", "Unauthorized"),
                    "500": _ref("responses", "Internal"),
                },
            }
        },
        "/admin/runs": {
            "get": _admin(
                "listRuns",
                "Runs, newest first.",
                _answer("The runs.", _schema("RunList")),
                query=[
                    _query(
                        "status",
                        "Only runs with this status.",
                        {"type": "string", "enum": [status.value for status in RunStatus]},
                    ),
                    _query("agent", "Only runs of this agent.", _NAME),
                    _query("session", "Only runs of this session.", _NAME),
                    _query(
                        "limit",
                        "The newest this many runs.",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                    ),
                ],
            )
        },
        "/admin/runs/{run_id}": {
            "get": _admin(
                "getRun",
                "One run, with its steps.",
                _answer("The run.", _schema("RunWithSteps")),
                errors={"404": _NOT_FOUND},
                path="RunId",
            )
        },
        "/admin/runs/{run_id}/kill": {
            "post": _admin(
                "killRun",
                "Ask a running run to halt with 'killed' at its next gate (audited); one that "
                "no live process serves halts at once.",
                _answer("The kill is requested.", _schema("KillRequested")),
                errors={"404": _NOT_FOUND, "409": _CONFLICT},
                path="RunId",
            )
        },
        "/admin/dlq": {
            "get": _admin(
                "listDeadLetters",
                "Dead letters, oldest first, without their packets.",
                _answer("The dead letters.", _schema("DeadLetterList")),
                query=[
                    _query(
                        "status",
                        "Only dead letters with this status, or all.",
                        {"type": "string", "enum": list(DEAD_LETTER_FILTERS), "default": "open"},
                    )
                ],
            )
        },
        "/admin/dlq/{run_id}": {
            "get": _admin(
                "getDeadLetter",
                "A run's newest dead letter, with its escalation packet.",
                _answer("The dead letter.", _schema("DeadLetterWithPacket")),
                errors={"404": _NOT_FOUND},
                path="RunId",
            )
        },
        "/admin/dlq/{run_id}/retry": {
            "post": _admin(
                "retryDeadLetter",
                "Reopen a halted run, with an optional budget top-up; the SDK resumes it.",
                _answer("The run is running again.", _schema("Retried")),
                errors={"404": _NOT_FOUND, "409": _CONFLICT},
                path="RunId",
                body={"required": False, "content": _json(_schema("TopUp"))},
            )
        },
        "/admin/dlq/{run_id}/drop": {
            "post": _admin(
                "dropDeadLetter",
                "Drop a run's open dead letter: the run stays halted.",
                _answer("The dead letter is dropped.", _schema("Dropped")),
                errors={"404": _NOT_FOUND, "409": _CONFLICT},
                path="RunId",
            )
        },
        "/admin/approvals": {
            "get": _admin(
                "listApprovals",
                "Approvals, oldest request first; by default the ones waiting.",
                _answer("The approvals.", _schema("ApprovalList")),
                query=[
                    _query(
                        "status",
                        "Only approvals with this status, or all.",
                        {"type": "string", "enum": list(APPROVAL_FILTERS), "default": "pending"},
                    )
                ],
            )
        },
        "/admin/approvals/{approval_id}": {
            "get": _admin(
                "getApproval",
                "One approval, with what its reviewer sees.",
                _answer("The approval.", _schema("Approval")),
                errors={"404": _NOT_FOUND},
                path="ApprovalId",
            )
        },
        "/admin/approvals/{approval_id}/approve": {
            "post": _admin(
                "approveApproval",
                "Let the waiting call run, as asked or with edited arguments (audited under "
                "the admin key's name).",
                _answer("The approval, approved.", _schema("Approval")),
                errors={"404": _NOT_FOUND, "409": _CONFLICT},
                path="ApprovalId",
                body={"required": False, "content": _json(_schema("Approve"))},
            )
        },
        "/admin/approvals/{approval_id}/reject": {
            "post": _admin(
                "rejectApproval",
                "Refuse the waiting call; the agent is given the feedback (audited).",
                _answer("The approval, rejected.", _schema("Approval")),
                errors={"404": _NOT_FOUND, "409": _CONFLICT},
                path="ApprovalId",
                body={"required": True, "content": _json(_schema("Reject"))},
            )
        },
        "/admin/shadow": {
            "get": _admin(
                "listProposals",
                "The writes runs in shadow mode proposed instead of making, oldest first.",
                _answer("The proposals.", _schema("ProposalList")),
                query=[_query("agent", "Only this agent's proposals.", _NAME)],
            )
        },
        "/admin/shadow/report": {
            "get": _admin(
                "shadowReport",
                "How often reviewers agreed with each agent's proposals, per tool.",
                _answer("The figures, by agent and tool.", _schema("ShadowReport")),
                query=[_query("agent", "Only this agent's figures.", _NAME)],
            )
        },
        "/admin/shadow/{proposal_id}/review": {
            "post": _admin(
                "reviewProposal",
                "Give a proposal its verdict; the first verdict counts (audited).",
                _answer("The proposal, reviewed.", _schema("Proposal")),
                errors={"404": _NOT_FOUND, "409": _CONFLICT},
                path="ProposalId",
                body={"required": True, "content": _json(_schema("ProposalReview"))},
            )
        },
        "/admin/breakers": {
            "get": _admin(
                "listBreakers",
                "Every circuit breaker: state, failure and slow-call rates.",
                _answer("The breakers.", _schema("BreakerList")),
            )
        },
        "/admin/policy/reload": {
            "post": _admin(
                "reloadPolicy",
                "Read the policy file again; a refused file leaves the policy in force.",
                _answer("The new policy is in force.", _schema("Reloaded")),
                errors={
                    "422": _answer(
                        "The file was refused; the policy in force stays.",
                        _schema("ReloadRefused"),
                    )
                },
            )
        },
        "/admin/audit/verify": {
            "get": _admin(
                "verifyAudit",
                "Walk the audit chain.",
                _answer("The chain is intact.", _schema("AuditIntact")),
                errors={
                    "409": _answer(
                        "The chain is broken: the first broken entry, and why.",
                        _schema("AuditBroken"),
                    )
                },
            )
        },
        "/healthz": {
            "get": {
                "tags": ["meta"],
                "operationId": "health",
                "summary": "Liveness.",
                "responses": {
                    "200": _answer(
                        "The gateway is up.", _object(["status"], status={"const": "ok"})
                    )
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["meta"],
                "operationId": "metrics",
                "summary": "Prometheus metrics.",
                "responses": {
                    "200": {
                        "description": "The text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "tags": ["meta"],
                "operationId": "openapi",
                "summary": "This document.",
                "responses": {"200": _answer("The OpenAPI 3.1 document.", _ANY_OBJECT)},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Corral gateway",
            "version": __version__,
            "summary": "OpenAI- and Anthropic-compatible endpoints that put every call "
            "through Corral's budgets, breakers, loop detection and audit.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "openai", "description": "OpenAI-compatible model calls."},
            {"name": "anthropic", "description": "Anthropic-compatible model calls."},
            {"name": "admin", "description": "Operator actions; they take an admin key."},
            {"name": "meta", "description": "Health, metrics and this document; no key."},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Authorization: Bearer KEY (OpenAI SDKs).",
                },
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "x-api-key: KEY (Anthropic SDKs).",
                },
            },
            "schemas": _SCHEMAS,
            "headers": _HEADERS,
            "parameters": _PARAMETERS,
            "responses": _RESPONSES,
        },
    }


OPENAPI: dict[str, Any] = _build()
