"""The OpenAPI 3 document, generated from the same pydantic models the routes validate with."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
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
    components = schema.get("$defs", {})
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
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def _operation(op: Operation) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}}}
    success: dict[str, Any] = {"description": "success"}
    if op.response is not None:
        ref = {"$ref": REF.format(model=op.response.__name__)}
        success["content"] = {"application/json": {"schema": ref}}
    responses: dict[str, Any] = {str(op.status): success}
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(pattern)}
        for name, pattern in PATH_PARAM.findall(op.path)
    ]
    if op.query is not None:
        query_schema = op.query.model_json_schema(ref_template=REF)
        required = set(query_schema.get("required", []))
        for name, prop in query_schema.get("properties", {}).items():
            parameters.append(
                {"name": name, "in": "query", "required": name in required, "schema": prop}
            )
    result: dict[str, Any] = {
        "summary": op.summary,
        "tags": list(op.tags),
        "responses": responses,
    }
    if parameters:
        result["parameters"] = parameters
    if op.body is not None:
        result["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": REF.format(model=op.body.__name__)}}
            },
        }
        responses["400"] = {"description": "malformed JSON", **error}
        responses["413"] = {"description": "body too large", **error}
        responses["415"] = {"description": "not JSON", **error}
    if op.body is not None or op.query is not None or parameters:
        responses["422"] = {"description": "invalid input", **error}
    if op.auth:
        result["security"] = [{"bearer": []}]
        responses["401"] = {"description": "missing or bad token", **error}
    if op.scope is not None:
        responses["403"] = {"description": f"scope {op.scope} required", **error}
        result["description"] = f"Requires scope `{op.scope}`."
    if "{" in op.path:
        responses["404"] = {"description": "not found (or not the caller's)", **error}
    return result


def _path_schema(pattern: str) -> dict[str, str]:
    """`{id:[0-9]+}` is an integer; any other path parameter is a string."""
    return {"type": "integer"} if pattern == "[0-9]+" else {"type": "string"}
