"""The gateway's OpenAPI 3.1 document, served at GET /openapi.json.

Model-call bodies are described loosely (the main fields, everything else passed to the
upstream as-is): the OpenAI and Anthropic references own those formats. What Corral adds
is described exactly: the halt error, the X-Corral-* headers and the admin API. Streamed
answers are text/event-stream, each event's data one JSON object of the schema its
description names. The document is built once at import; the app serves its bytes.
"""

from __future__ import annotations

from typing import Any, get_args

from corral import __version__
from corral.calls import HaltReason, RunStatus
from corral.runtime.operations import DEAD_LETTER_FILTERS
from corral.state import StepStatus
from corral.state.counters import BreakerState

Schema = dict[str, Any]


def _ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> Schema:
    return _ref("schemas", name)


def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _answer(description: str, schema: Schema, **headers: Schema) -> Schema:
    response: Schema = {"description": description, "content": _json(schema)}
    if headers:
        response["headers"] = headers
    return response


def _nullable(kind: str, **rest: Any) -> Schema:
    return {"type": [kind, "null"], **rest}


def _object(required: list[str], open_: bool = True, **properties: Schema) -> Schema:
    schema: Schema = {"type": "object", "required": required, "properties": properties}
    if not open_:
        schema["additionalProperties"] = False
    return schema


def _event_data(schema: Schema, *literals: str) -> Schema:
    """A server-sent event's data: JSON of `schema`, or one of the `literals` as is."""
    json_data: Schema = {
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": schema,
    }
    if not literals:
        return json_data
    return {"anyOf": [json_data, {"type": "string", "enum": list(literals)}]}


# The events of a streamed Anthropic message, in the order they come.
_MESSAGE_EVENTS = (
    "message_start",
    "content_block_start",
    "ping",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "error",
)

_STRING: Schema = {"type": "string"}
_NAME: Schema = {"type": "string", "minLength": 1}  # a filter given empty is refused
_INTEGER: Schema = {"type": "integer", "minimum": 0}
_NUMBER: Schema = {"type": "number", "minimum": 0}
_TIME: Schema = {"type": "number", "description": "Epoch seconds."}
_ANY: Schema = {"description": "Any JSON value."}
_ANY_OBJECT: Schema = {"type": "object"}

# --- schemas ----------------------------------------------------------------------

_SCHEMAS: dict[str, Schema] = {
    "Error": _object(["error"], error=_schema("ErrorDetail")),
    "ErrorDetail": _object(
        ["type", "message"],
        type={
            "type": "string",
            "description": "invalid_request_error, authentication_error, "
            "permission_error, not_found_error, rate_limit_error, request_too_large, "
            "upstream_error or internal_error; the admin API's own are not_found, "
            "method_not_allowed, conflict, invalid_policy and audit_chain_broken.",
        },
        message=_STRING,
        code=_nullable("string"),
        param=_nullable("string"),
        run_id=_nullable("string"),
    ),
    "CorralHalt": _object(
        ["error"],
        error=_object(
            ["type", "code", "message", "run_id"],
            type={"const": "corral_halt"},
            code={
                "type": "string",
                "enum": [reason.value for reason in HaltReason],
                "description": "Why the run halted; part of the public API.",
            },
            message=_STRING,
            run_id={
                "type": "string",
                "description": "The halted run: retry it with POST /admin/dlq/{run_id}/retry.",
            },
        ),
    ),
    "ChatMessage": _object(
        ["role"],
        role={"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        content={"type": ["string", "array", "null"]},
        tool_calls={"type": "array", "items": _ANY_OBJECT},
        tool_call_id=_STRING,
        name=_STRING,
    ),
    "ChatCompletionRequest": _object(
        ["model", "messages"],
        model={"type": "string", "description": "A model or route of the policy."},
        messages={"type": "array", "minItems": 1, "items": _schema("ChatMessage")},
        max_tokens={"type": "integer", "minimum": 1},
        max_completion_tokens={"type": "integer", "minimum": 1},
        stream={"type": "boolean", "default": False},
        stream_options=_object([], include_usage={"type": "boolean"}),
        tools={"type": "array", "items": _ANY_OBJECT},
        tool_choice={"type": ["string", "object"]},
        temperature={"type": "number"},
        top_p={"type": "number"},
        stop={"type": ["string", "array"]},
    ),
    "ChatCompletion": _object(
        ["id", "object", "model", "choices"],
        id=_STRING,
        object={"const": "chat.completion"},
        created={"type": "integer"},
        model=_STRING,
        choices={"type": "array", "items": _ANY_OBJECT},
        usage=_ANY_OBJECT,
    ),
    "ChatCompletionChunk": _object(
        ["id", "object", "model", "choices"],
        id=_STRING,
        object={"const": "chat.completion.chunk"},
        created={"type": "integer"},
        model=_STRING,
        choices={"type": "array", "items": _ANY_OBJECT},
        usage=_ANY_OBJECT,
    ),
    "ChatCompletionEvent": {
        "description": "One server-sent event of a streamed chat completion (OpenAI's "
        "format): its data is a ChatCompletionChunk, or an Error that ends the stream, or, "
        "last, the text [DONE].",
        **_object(
            ["data"],
            event={"type": "string"},
            data=_event_data(
                {"anyOf": [_schema("ChatCompletionChunk"), _schema("Error")]}, "[DONE]"
            ),
        ),
    },
    "MessageStreamEvent": {
        "description": "One server-sent event of a streamed message (Anthropic's format), "
        "named by its data's type; an error event ends the stream.",
        **_object(
            ["event", "data"],
            event={"type": "string", "enum": list(_MESSAGE_EVENTS)},
            data=_event_data(
                _object(["type"], type={"type": "string", "enum": list(_MESSAGE_EVENTS)})
            ),
        ),
    },
    "MessagesRequest": _object(
        ["model", "messages", "max_tokens"],
        model={"type": "string", "description": "A model or route of the policy."},
        messages={
            "type": "array",
            "minItems": 1,
            "items": _object(
                ["role", "content"],
                role={"type": "string", "enum": ["user", "assistant"]},
                content={"type": ["string", "array"]},
            ),
        },
        max_tokens={"type": "integer", "minimum": 1},
        system={"type": ["string", "array"]},
        stream={"type": "boolean", "default": False},
        tools={"type": "array", "items": _ANY_OBJECT},
        tool_choice=_ANY_OBJECT,
        temperature={"type": "number"},
        top_p={"type": "number"},
        stop_sequences={"type": "array", "items": _STRING},
    ),
    "Message": _object(
        ["id", "type", "role", "content", "model"],
        id=_STRING,
        type={"const": "message"},
        role={"const": "assistant"},
        content={"type": "array", "items": _ANY_OBJECT},
        model=_STRING,
        stop_reason=_nullable("string"),
        usage=_ANY_OBJECT,
    ),
    "ModelList": {
        "description": "The policy's models and routes, in OpenAI's listing shape, or "
        "Anthropic's when the request carries an anthropic-version header.",
        **_object(["data"], data={"type": "array", "items": _object(["id"], id=_STRING)}),
    },
    "Run": _object(
        ["id", "agent", "agent_type", "status", "created_at", "updated_at"],
        id=_STRING,
        agent=_STRING,
        agent_type=_STRING,
        created_at=_TIME,
        updated_at=_TIME,
        task=_nullable("string"),
        session=_nullable("string"),
        status={"type": "string", "enum": [status.value for status in RunStatus]},
        halt_reason=_nullable("string", description="A HaltReason value, for a halted run."),
        ended_at=_nullable("number"),
        trace_id=_nullable("string"),
        input_tokens=_INTEGER,
        output_tokens=_INTEGER,
        cost_usd=_NUMBER,
        steps=_INTEGER,
        tool_calls=_INTEGER,
        outcome=_ANY,
        error=_nullable("string"),
        kill_requested_at=_nullable("number"),
        time_to_safe_fail_ms=_nullable("number"),
        last_checkpoint_id=_nullable("integer"),
        parent_run_id=_nullable("string"),
        topup=_nullable(
            "object",
            description="Budget added by dead-letter retries, summed (wall_clock in seconds).",
            additionalProperties={"type": "number"},
        ),
        owner=_nullable(
            "string", description="The lease of the process serving the run; null once none does."
        ),
        oneshot={
            "type": "boolean",
            "description": "A run of one gateway request (no session): nobody resumes it.",
        },
    ),
    "Step": _object(
        ["run_id", "seq", "kind", "name", "status", "started_at", "ended_at"],
        run_id=_STRING,
        seq={"type": "integer", "minimum": 1},
        kind={"type": "string", "enum": ["llm", "tool"]},
        name=_STRING,
        input=_ANY,
        output=_ANY,
        started_at=_TIME,
        ended_at=_TIME,
        status={"type": "string", "enum": list(get_args(StepStatus))},
        error=_nullable("string"),
        input_tokens=_INTEGER,
        output_tokens=_INTEGER,
        cost_usd=_NUMBER,
        idempotency_key=_nullable("string"),
        model_used=_nullable("string"),
    ),
    "RunWithSteps": _object(
        ["run", "steps"],
        run=_schema("Run"),
        steps={"type": "array", "items": _schema("Step"), "description": "By seq."},
    ),
    "RunList": _object(["runs"], runs={"type": "array", "items": _schema("Run")}),
    "KillRequested": _object(
        ["run_id", "requested_at", "halted"],
        run_id=_STRING,
        requested_at=_TIME,
        halted={
            "type": "boolean",
            "description": "True if the run was halted here and now: no live process served it.",
        },
    ),
    "DeadLetter": _object(
        ["id", "run_id", "reason", "status", "created_at", "updated_at"],
        id={"type": "integer"},
        run_id=_STRING,
        reason={"type": "string", "description": "The run's halt reason."},
        status={"type": "string", "enum": ["open", "retried", "dropped"]},
        created_at=_TIME,
        updated_at=_TIME,
    ),
    "DeadLetterWithPacket": {
        "allOf": [
            _schema("DeadLetter"),
            _object(["packet"], packet={"description": "The run's escalation packet."}),
        ]
    },
    "DeadLetterList": _object(
        ["dead_letters"], dead_letters={"type": "array", "items": _schema("DeadLetter")}
    ),
    "TopUp": {
        "description": "Budget to add to the run before it resumes; every field optional.",
        **_object(
            [],
            open_=False,
            add_usd={
                "anyOf": [
                    {"type": "number", "minimum": 0},
                    {"type": "string", "pattern": r"^\s*\+?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"},
                ],
                "description": 'USD, e.g. 0.2 or "0.20"; not negative.',
            },
            add_tokens=_INTEGER,
            add_tool_calls=_INTEGER,
            add_steps=_INTEGER,
            add_wall_clock={
                "type": "string",
                "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)\s*$",
                "description": "A duration with its unit, e.g. 30s, 10m, 1h.",
            },
        ),
    },
    "Retried": _object(
        ["run_id", "dead_letter_id", "topup", "run"],
        run_id=_STRING,
        dead_letter_id={"type": "integer"},
        topup={
            "type": "object",
            "description": "The top-up of this retry, keyed by budget (wall_clock in seconds).",
            "additionalProperties": {"type": "number"},
        },
        run=_schema("Run"),
    ),
    "Dropped": _object(
        ["run_id", "dead_letter_id", "status"],
        run_id=_STRING,
        dead_letter_id={"type": "integer"},
        status={"const": "dropped"},
    ),
    "BreakerList": _object(
        ["breakers"],
        breakers={
            "type": "array",
            "items": _object(
                ["key", "provider", "model", "state"],
                key=_STRING,
                provider=_STRING,
                model=_STRING,
                state={"type": "string", "enum": [state.value for state in BreakerState]},
                calls=_INTEGER,
                failures=_INTEGER,
                slow=_INTEGER,
                failure_rate=_NUMBER,
                slow_rate=_NUMBER,
                opened_at=_nullable("number"),
                half_open_in=_nullable("number", description="Seconds; open breakers only."),
                probes_out=_INTEGER,
            ),
        },
    ),
    "Reloaded": _object(
        ["reloaded", "source"],
        reloaded={"const": True},
        source={"type": "string", "description": "The policy file read."},
        agents={"type": "array", "items": _STRING},
        models={"type": "array", "items": _STRING},
        routes={"type": "array", "items": _STRING},
        restart_required_for={
            "type": "array",
            "items": {"type": "string", "enum": ["store", "counters"]},
            "description": "Settings the new policy changes that take effect only when the "
            "gateway restarts: the store and counters are opened once.",
        },
    ),
    "ReloadRefused": _object(
        ["reloaded", "error"],
        reloaded={"const": False},
        source=_STRING,
        error={
            "allOf": [_schema("ErrorDetail")],
            **_object(
                ["issues"],
                issues={
                    "type": "array",
                    "description": "Each mistake, by line (0: the file could not be read).",
                    "items": _object(
                        ["line", "path", "message"],
                        line={"type": "integer"},
                        path=_STRING,
                        message=_STRING,
                    ),
                },
            ),
        },
    ),
    "AuditIntact": _object(["ok", "entries"], ok={"const": True}, entries=_INTEGER),
    "AuditBroken": _object(
        ["ok", "entries", "broken_at", "reason", "error"],
        ok={"const": False},
        entries={"type": "integer", "description": "Intact entries before the break."},
        broken_at={"type": "integer", "description": "Position (1-based) of the first broken."},
        reason=_STRING,
        error=_schema("ErrorDetail"),
    ),
}

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
        "description": "Milliseconds the gateway added on top of the upstream's time.",
        "schema": {"type": "string", "pattern": r"^\d+\.\d{3}$"},
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
    "RunId": {
        "name": "run_id",
        "in": "path",
        "required": True,
        "description": "The run's id.",
        "schema": _STRING,
    },
}

_RUN_HEADERS = {name: _ref("headers", name) for name in ("X-Corral-Run",)}
_ANSWER_HEADERS = {
    name: _ref("headers", name)
    for name in ("X-Corral-Run", "X-Corral-Budget-Remaining-Usd", "X-Corral-Overhead-Ms")
}

_RESPONSES: dict[str, Schema] = {
    "BadRequest": _answer("The request is malformed or names a bad value.", _schema("Error")),
    "Unauthorized": _answer("No key, or an unknown, revoked or expired one.", _schema("Error")),
    "AdminForbidden": _answer("The key is not an admin key.", _schema("Error")),
    "NotFound": _answer("No such run, or the run has no dead letter.", _schema("Error")),
    "Conflict": _answer("The run or dead letter is in the wrong state.", _schema("Error")),
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
        "parameters": [_ref("parameters", "Session"), _ref("parameters", "Task")],
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
    run_id: bool = False,
    query: list[Schema] | None = None,
    body: Schema | None = None,
) -> Schema:
    """An admin route. Every one refuses a query parameter it does not take (400) and
    a key that is not the admin key (401, 403)."""
    operation: Schema = {
        "tags": ["admin"],
        "operationId": operation_id,
        "summary": summary,
        "security": _KEYED,
    }
    parameters = ([_ref("parameters", "RunId")] if run_id else []) + (query or [])
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
                run_id=True,
            )
        },
        "/admin/runs/{run_id}/kill": {
            "post": _admin(
                "killRun",
                "Ask a running run to halt with 'killed' at its next gate (audited); one that "
                "no live process serves halts at once.",
                _answer("The kill is requested.", _schema("KillRequested")),
                errors={"404": _NOT_FOUND, "409": _CONFLICT},
                run_id=True,
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
                run_id=True,
            )
        },
        "/admin/dlq/{run_id}/retry": {
            "post": _admin(
                "retryDeadLetter",
                "Reopen a halted run, with an optional budget top-up; the SDK resumes it.",
                _answer("The run is running again.", _schema("Retried")),
                errors={"404": _NOT_FOUND, "409": _CONFLICT},
                run_id=True,
                body={"required": False, "content": _json(_schema("TopUp"))},
            )
        },
        "/admin/dlq/{run_id}/drop": {
            "post": _admin(
                "dropDeadLetter",
                "Drop a run's open dead letter: the run stays halted.",
                _answer("The dead letter is dropped.", _schema("Dropped")),
                errors={"404": _NOT_FOUND, "409": _CONFLICT},
                run_id=True,
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
