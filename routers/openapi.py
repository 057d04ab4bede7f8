"""The OpenAPI 3 document, generated from the same pydantic models the routes validate with."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from backend.schemas import ErrorBody

from .http import Operation

PATH_PARAM = re.compile(r"\{(\w+)(?::([^}]*))?\}")
REF = "#/components/schemas/{model}"


def build_openapi(operations: list[Operation], *, version: str) -> dict[str, Any]:
    models: set[type[BaseModel]] = {ErrorBody}
    for op in operations:
        models.update(m for m in (op.body, op.response) if m is not None)
    _, schema = models_json_schema(
        [(model, "validation") for model in sorted(models, key=lambda m: m.__name__)],
        ref_template=REF,
    )
    components = _close_key_patterns(schema.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        path = PATH_PARAM.sub(r"{\1}", op.path)  # drop aiohttp's {name:regex} patterns
        paths.setdefault(path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Notification server", "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def _close_key_patterns(node: Any) -> Any:
    """pydantic writes `dict[Pattern, V]` as `patternProperties`, which lets keys that miss the
    pattern through with any value; the model refuses them, so the document says
    `propertyNames` + `additionalProperties` instead (what schemathesis then generates agrees)."""
    if isinstance(node, list):
        return [_close_key_patterns(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _close_key_patterns(value) for key, value in node.items()}
    patterns = node.get("patternProperties")
    if isinstance(patterns, dict) and len(patterns) == 1 and "additionalProperties" not in node:
        ((pattern, value_schema),) = patterns.items()
        del node["patternProperties"]
        node["propertyNames"] = {**node.get("propertyNames", {}), "pattern": pattern}
        node["additionalProperties"] = value_schema
    return node


def _error(description: str) -> dict[str, Any]:
    schema = {"$ref": REF.format(model="ErrorBody")}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _success(op: Operation) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "success"}
    content: dict[str, Any] = {}
    if op.response is not None:
        content["application/json"] = {"schema": {"$ref": REF.format(model=op.response.__name__)}}
    if op.html:
        content["text/html"] = {"schema": {"type": "string"}}
    if op.event_stream:
        success["description"] = "an endless stream of Server-Sent Events"
        content["text/event-stream"] = {"schema": {"type": "string"}}
    if content:
        success["content"] = content
    return success


def _parameters(op: Operation) -> list[dict[str, Any]]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(op, name, pattern)}
        for name, pattern in PATH_PARAM.findall(op.path)
    ]
    for where, model in (("query", op.query), ("header", op.headers)):
        if model is None:
            continue
        schema = model.model_json_schema(ref_template=REF, by_alias=True)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            parameters.append(
                {"name": name, "in": where, "required": name in required, "schema": prop}
            )
    return parameters


def _operation(op: Operation) -> dict[str, Any]:
    """Every answer the route can give, with its body: the success and each error."""
    responses: dict[str, Any] = {str(op.status): _success(op)}
    parameters = _parameters(op)
    result: dict[str, Any] = {
        "summary": op.summary,
        "tags": list(op.tags),
        "responses": responses,
    }
    if parameters:
        result["parameters"] = parameters
    if op.body is not None:
        result["requestBody"] = {
            # An empty body reads as {}: it is optional when {} is a valid body.
            "required": not _accepts_empty(op.body),
            "content": {
                "application/json": {"schema": {"$ref": REF.format(model=op.body.__name__)}}
            },
        }
        responses["400"] = _error("malformed JSON")
        responses["413"] = _error("body too large")
        responses["415"] = _error("not JSON")
    if op.body is not None or parameters:
        responses["422"] = _error("invalid input: details name the failing fields")
    if op.auth:
        result["security"] = [{"bearer": []}]
        responses["401"] = _error("missing or bad token")
    if op.scope is not None:
        # Publishers and admins may also be services with an API key (X-API-Key).
        result["security"] = [{"bearer": []}, {"apiKey": []}]
        responses["403"] = _error(f"scope {op.scope} required")
        result["description"] = f"Requires scope `{op.scope}`."
    if "{" in op.path:
        responses["404"] = _error("not found (or not the caller's)")
    for status, description in op.errors.items():
        responses[str(status)] = _error(description)
    responses["503"] = _error("a dependency (database, Redis) is unavailable; retry later")
    return result


def _accepts_empty(model: type[BaseModel]) -> bool:
    try:
        model.model_validate({})
    except ValidationError:
        return False
    return True


def _path_schema(op: Operation, name: str, pattern: str) -> dict[str, Any]:
    """`{id:[0-9]+}` is a positive signed 64-bit integer; others say their type in path_types."""
    if name in op.path_types:
        return op.path_types[name].json_schema()
    if pattern == "[0-9]+":
        return {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
    return {"type": "string"}
