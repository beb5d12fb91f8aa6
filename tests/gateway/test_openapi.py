"""The OpenAPI document: valid OpenAPI 3.1 (openapi-spec-validator), every route the
gateway answers, each with its responses, and what the validator cannot know: refs,
parameters, security, streams and the fields of the records."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import orjson
import pytest
from openapi_spec_validator import validate

from corral.calls import HaltReason
from corral.gates.breaker import breaker_report, breaker_settings
from corral.gateway.admin import AdminAPI
from corral.gateway.openapi import OPENAPI
from corral.policy import Breaker
from corral.runtime.operations import TOPUP_OPTIONS
from corral.state import DeadLetterRecord, MemoryCounters, RunRecord, StepRecord

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# The routes the app answers itself; the admin API lists its own.
APP_ROUTES = {
    ("/v1/chat/completions", "post"),
    ("/v1/messages", "post"),
    ("/v1/models", "get"),
    ("/healthz", "get"),
    ("/metrics", "get"),
    ("/openapi.json", "get"),
}
OPEN_ROUTES = {"/healthz", "/metrics", "/openapi.json"}
SCHEMAS: dict[str, Any] = OPENAPI["components"]["schemas"]


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in OPENAPI["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def resolve(node: dict[str, Any]) -> Any:
    """The node a local $ref points at (the node itself if it has none)."""
    while "$ref" in node:
        target: Any = OPENAPI
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def properties(name: str) -> set[str]:
    """Every property a schema names, through allOf."""
    schema = resolve(SCHEMAS[name])
    names = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        names |= set(resolve(part).get("properties", {}))
    return names


def test_the_document_is_openapi_3_1_and_serialises() -> None:
    assert OPENAPI["openapi"] == "3.1.0"
    validate(OPENAPI)  # raises, naming the offending node, if it is not valid OpenAPI 3.1
    assert orjson.loads(orjson.dumps(OPENAPI)) == OPENAPI


def test_every_route_is_listed_and_nothing_else() -> None:
    admin = {
        (template, method.lower()) for template, handlers in AdminAPI.ROUTES for method in handlers
    }
    listed = {(path, method) for path, method, _ in operations()}
    assert listed == APP_ROUTES | admin


@pytest.mark.parametrize(("path", "method"), sorted({(p, m) for p, m, _ in operations()}))
def test_each_operation_has_a_success_response_and_every_response_a_description(
    path: str, method: str
) -> None:
    operation = OPENAPI["paths"][path][method]
    responses = operation["responses"]
    assert "200" in responses
    for status, response in responses.items():
        assert re.fullmatch(r"[1-5]\d\d", status), status
        assert resolve(response)["description"]


def test_operation_ids_are_unique() -> None:
    ids = [operation["operationId"] for _, _, operation in operations()]
    assert len(ids) == len(set(ids))


def test_every_ref_resolves() -> None:
    refs = [node for node in walk(OPENAPI) if "$ref" in node]
    assert refs
    for node in refs:
        assert node["$ref"].startswith("#/components/"), node
        resolve(node)  # a KeyError names the dangling part


def test_each_path_template_declares_its_parameters() -> None:
    for path, _, operation in operations():
        declared = {
            (p["name"], p["in"], p.get("required"))
            for p in map(resolve, operation.get("parameters", []))
        }
        for name in re.findall(r"\{(\w+)\}", path):
            assert (name, "path", True) in declared, (path, name)
        assert all(where != "path" or name in path for name, where, _ in declared)


def test_security_schemes_and_open_routes() -> None:
    schemes = OPENAPI["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert (schemes["apiKey"]["type"], schemes["apiKey"]["in"], schemes["apiKey"]["name"]) == (
        "apiKey",
        "header",
        "x-api-key",
    )
    # No document-wide requirement: each operation says what it takes, open ones nothing.
    assert "security" not in OPENAPI
    for path, _, operation in operations():
        if path in OPEN_ROUTES:
            assert "security" not in operation, path
            assert "401" not in operation["responses"], path
        else:
            assert operation["security"] == [{"bearer": []}, {"apiKey": []}], path
            assert {"401", "500"} <= set(operation["responses"]), path
        if path.startswith("/admin/"):
            assert {"401", "403"} <= set(operation["responses"]), path


def test_post_bodies_document_the_415() -> None:
    for path, _, operation in operations():
        if "requestBody" in operation:
            assert set(operation["requestBody"]["content"]) == {"application/json"}, path
            assert resolve(operation["responses"]["415"])["description"], path


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_model_calls_document_corral_headers_and_the_halt(path: str) -> None:
    operation = OPENAPI["paths"][path]["post"]
    parameters = {(p["name"], p["in"]) for p in map(resolve, operation["parameters"])}
    assert parameters == {
        (name, "header")
        for name in (
            "X-Corral-Session",
            "X-Corral-Task",
            "X-Corral-Parent-Run",
            "X-Corral-Outcome",
            "traceparent",
        )
    }
    answer = operation["responses"]["200"]
    assert set(answer["headers"]) == {
        "X-Corral-Run",
        "X-Corral-Budget-Remaining-Usd",
        "X-Corral-Overhead-Ms",
        "X-Corral-Retry-Wait-Ms",
        "traceparent",
    }
    assert set(answer["content"]) == {"application/json", "text/event-stream"}
    # OpenAPI 3.1 tools read a stream's schema as that of each event: {event, data}.
    event = resolve(answer["content"]["text/event-stream"]["schema"])
    assert event["type"] == "object" and "data" in event["required"]
    data = [node for node in walk(event["properties"]["data"]) if "contentMediaType" in node]
    assert [node["contentMediaType"] for node in data] == ["application/json"]
    halt = resolve(operation["responses"]["403"])["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/CorralHalt"} in halt["anyOf"]
    body = resolve(operation["requestBody"]["content"]["application/json"]["schema"])
    assert {"model", "messages", "max_tokens", "stream", "tools"} <= set(body["properties"])


def test_the_halt_schema_lists_every_halt_reason() -> None:
    error = SCHEMAS["CorralHalt"]["properties"]["error"]
    assert set(error["required"]) == {"type", "code", "message", "run_id"}
    assert error["properties"]["type"] == {"const": "corral_halt"}
    assert error["properties"]["code"]["enum"] == [reason.value for reason in HaltReason]


def test_admin_schemas_name_every_field_the_records_have() -> None:
    assert properties("Run") == {f.name for f in fields(RunRecord)}
    assert properties("Step") == {f.name for f in fields(StepRecord)}
    assert properties("RunWithSteps") == {"run", "steps"}
    assert properties("DeadLetter") == {f.name for f in fields(DeadLetterRecord)} - {"packet"}
    assert properties("DeadLetterWithPacket") == {f.name for f in fields(DeadLetterRecord)}
    assert properties("TopUp") == set(TOPUP_OPTIONS)
    assert SCHEMAS["TopUp"]["additionalProperties"] is False


async def test_the_breaker_schema_names_every_field_of_the_report() -> None:
    counters = MemoryCounters()
    settings = breaker_settings(Breaker(window=4, min_calls=2))
    admission = await counters.breaker_admit("breaker:p:m", 0.0, settings)
    await counters.breaker_record(
        "breaker:p:m", admission, failed=False, slow=False, now=0.0, settings=settings
    )
    [row] = await breaker_report(counters, 0.0)
    item = SCHEMAS["BreakerList"]["properties"]["breakers"]["items"]
    assert set(item["properties"]) == set(row)
