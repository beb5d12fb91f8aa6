"""The schemas of the gateway's OpenAPI document: the bodies Corral defines exactly (errors,
runs, steps, dead letters, approvals, shadow proposals, breakers, audit) and the model-call
bodies it describes loosely."""

from __future__ import annotations

from typing import Any, get_args

from corral.calls import HaltReason, RunStatus
from corral.policy_approvals import SCOPE_RANK
from corral.runtime.review import VERDICTS
from corral.state import ApprovalStatus, StepStatus
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
        trace_id=_nullable("string", description="The run's first trace (W3C trace id, hex)."),
        trace_span=_nullable("string", description="The root span id of that trace, hex."),
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
        waiting_s={
            "type": "number",
            "minimum": 0,
            "description": "Seconds its calls waited for a human; its wall-clock cap does "
            "not count them.",
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
    "Approval": _object(
        ["id", "run_id", "step", "tool", "args", "rule", "requested_at", "timeout_at", "status"],
        id=_STRING,
        run_id=_STRING,
        step={"type": "integer", "description": "The run's step the call would be."},
        tool=_STRING,
        args={"description": "The arguments the call would run with, as validated."},
        rule={"type": "string", "description": "The rule that matched, as the policy has it."},
        requested_at=_TIME,
        timeout_at={
            "type": "number",
            "description": "Epoch seconds; past it the rule's on_timeout applies and "
            "no decision is taken.",
        },
        status={"type": "string", "enum": list(get_args(ApprovalStatus))},
        decided_at=_nullable("number"),
        decided_by=_nullable("string", description="Null for a timeout."),
        note=_nullable("string", description="The reviewer's note, or a rejection's feedback."),
        agent=_STRING,
        call_key=_nullable("string", description="Finds the approval again for the same call."),
        request_key=_nullable(
            "string", description="Finds the approval again for the same gateway request."
        ),
        args_hash={"type": "string", "description": "Binds the approval to its arguments."},
        approved_args={"description": "Edited arguments the call runs with instead; null if none."},
        escalations=_INTEGER,
        panel={"anyOf": [_schema("ApprovalPanel"), {"type": "null"}]},
    ),
    "ApprovalPanel": {
        "description": "What the reviewer sees: the call, why the agent makes it, the rule "
        "that stopped it and the run so far.",
        **_object(
            [],
            agent=_STRING,
            agent_type=_STRING,
            session=_nullable("string"),
            task=_nullable("string"),
            tool=_STRING,
            scope={"type": "string", "enum": list(SCOPE_RANK)},
            args=_ANY,
            reason=_nullable("string", description="The agent's stated reason."),
            expected=_nullable("string", description="The outcome the agent expects."),
            rollback=_nullable("string", description="How the call can be undone."),
            rule=_object(["source"], source=_STRING, when=_nullable("string")),
            on_timeout={"type": "string", "enum": ["cancel", "escalate", "fallback"]},
            on_reject={"type": "string", "enum": ["replan", "halt"]},
            fallback_tool=_nullable("string"),
            escalate_to=_nullable("string"),
            run=_object([], cost_usd=_NUMBER, steps=_INTEGER, tool_calls=_INTEGER, tokens=_INTEGER),
            last_steps={
                "type": "array",
                "items": _object(
                    ["seq", "kind", "name", "status"],
                    seq={"type": "integer"},
                    kind=_STRING,
                    name=_STRING,
                    status=_STRING,
                ),
            },
            preview={"description": "What the tool's preview returned, if it has one."},
            schema={
                "type": ["object", "boolean", "null"],
                "description": "The JSON schema edited arguments are checked against; null "
                "when unknown (edits are refused).",
            },
            door={"type": "string", "enum": ["sdk", "gateway"]},
        ),
    },
    "ApprovalList": _object(
        ["approvals"], approvals={"type": "array", "items": _schema("Approval")}
    ),
    "Approve": {
        "description": "An approval as asked, or with edited arguments; every field optional.",
        **_object(
            [],
            open_=False,
            note={"type": "string", "description": "A note for the audit log."},
            args={
                "type": "object",
                "description": "Arguments to run instead, checked against the tool's schema.",
            },
        ),
    },
    "Reject": _object(
        ["feedback"],
        open_=False,
        feedback={
            "type": "string",
            "pattern": r"\S",
            "description": "Why, and what the agent should do instead: it is told.",
        },
    ),
    "Proposal": _object(
        ["id", "run_id", "agent", "tool", "args", "scope", "proposed_at"],
        id=_STRING,
        run_id=_STRING,
        agent=_STRING,
        tool=_STRING,
        args=_ANY,
        scope={"type": "string", "enum": list(SCOPE_RANK)},
        proposed_at=_TIME,
        result={"description": "What the agent was given in place of the tool's result."},
        verdict=_nullable("string", enum=[*VERDICTS, None]),
        reviewed_by=_nullable("string"),
        reviewed_at=_nullable("number"),
        note=_nullable("string"),
    ),
    "ProposalList": _object(
        ["proposals"], proposals={"type": "array", "items": _schema("Proposal")}
    ),
    "ProposalReview": _object(
        ["verdict"],
        open_=False,
        verdict={
            "type": "string",
            "enum": list(VERDICTS),
            "description": "Whether the write proposed is what should have happened.",
        },
        note={"type": "string", "description": "Why, for the record."},
    ),
    "ShadowReport": _object(
        ["report"],
        report={
            "type": "array",
            "description": "By agent, then tool.",
            "items": _object(
                ["agent", "tool", "proposals", "reviewed", "agree", "disagree", "agreement"],
                agent=_STRING,
                tool=_STRING,
                proposals=_INTEGER,
                reviewed=_INTEGER,
                agree=_INTEGER,
                disagree=_INTEGER,
                agreement=_nullable(
                    "number",
                    minimum=0,
                    maximum=1,
                    description="agree / reviewed; null while nothing is reviewed.",
                ),
            ),
        },
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
