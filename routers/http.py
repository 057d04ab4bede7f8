"""HTTP edge helpers: parse bodies and queries with pydantic, authenticate, answer JSON errors."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from backend import codec, keys
from backend.db import RETRY_AFTER_SECONDS, is_unavailable
from backend.errors import DomainError, Forbidden, Invalid
from backend.logs import USER_ID
from backend.schemas import MAX_ID
from backend.security import AuthError, Principal, TokenClaims, bearer_token

log = logging.getLogger(__name__)
Model = TypeVar("Model", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Engine.IO answers its own errors (400 with its message and CORS headers): left as they are.
ENGINEIO_PREFIX = "/socket.io/"

ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "unavailable",
}


def json_response(body: Any, *, status: int = 200) -> web.Response:
    """A JSON answer encoded with orjson (a publish answers every stored notification)."""
    return web.json_response(body, status=status, dumps=codec.OrjsonModule.dumps)


def error_response(
    status: int, message: str, *, code: str | None = None, details: Any = None
) -> web.Response:
    body = {"error": {"code": code or ERROR_CODES.get(status, "error"), "message": message}}
    body["error"]["details"] = details
    return web.json_response(body, status=status)


def _validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]} for err in exc.errors()
    ]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as {"error": {code, message, details}}; nothing leaves as a 500 page."""
    try:
        response = await handler(request)
        if (
            response.status >= 400
            and response.content_type != "application/json"
            and not request.path.startswith(ENGINEIO_PREFIX)
        ):
            # Some handlers (static files) answer errors instead of raising them.
            return error_response(response.status, response.reason or "error")
        return response
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        message = exc.text or exc.reason
        if exc.status == 404:
            message = f"no route for {request.method} {request.path}"
        elif exc.status == 405:
            message = f"method {request.method} not allowed on {request.path}"
        response = error_response(exc.status, message.removeprefix(f"{exc.status}: "))
        for header in ("Allow", "Retry-After", "WWW-Authenticate"):
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
        return response
    except AuthError as exc:
        response = error_response(401, exc.reason)
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return response
    except DomainError as exc:
        return error_response(exc.status, exc.message, code=exc.code, details=exc.details)
    except ValidationError as exc:
        return error_response(422, "invalid request", details=_validation_details(exc))
    except Exception as exc:
        if is_unavailable(exc):
            request.app[keys.UNAVAILABLE_LOG].warning(
                "database unavailable on %s %s: %r", request.method, request.path, exc
            )
            response = error_response(503, "the database is unavailable; retry shortly")
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal server error", code="internal_error")


def identify(user_id: str) -> None:
    """Who made this request, on each of its log lines from here on, the access line included
    (access_middleware runs in the same task and clears it after its line)."""
    USER_ID.set(user_id)


def authenticate(request: web.Request) -> TokenClaims:
    """The caller's bearer token (scoped routes use `authorize`, which takes API keys too)."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raise AuthError("missing bearer token")
    claims = request.app[keys.VERIFIER].verify(token)
    identify(claims.sub)
    return claims


API_KEY_HEADER = "X-API-Key"


async def authorize(request: web.Request, scope: str) -> Principal:
    """A publisher or an admin: an `X-API-Key` (checked against the database, so a revoked key
    fails at once) or a bearer token, held to the same scope checks."""
    api_key = request.headers.get(API_KEY_HEADER)
    if api_key is not None:
        principal = await request.app[keys.API_KEYS].authenticate(api_key)
        identify(principal.publisher)  # key:<id>
    else:
        principal = Principal.of_token(authenticate(request))
    if not principal.has_scope(scope):
        raise Forbidden(f"scope {scope} required", details={"required_scope": scope})
    return principal


async def parse_body(request: web.Request, model: type[Model]) -> Model:
    """415 for a non-JSON body, 400 for malformed JSON, 422 for a body that breaks the schema or
    nests deeper than MAX_JSON_DEPTH (measured before anything recursive walks it)."""
    content_type = request.content_type
    depth = request.app[keys.SETTINGS].max_json_depth
    raw = await request.read()
    if not raw:
        payload: Any = {}
    else:
        if content_type not in ("application/json", "") and not content_type.endswith("+json"):
            raise web.HTTPUnsupportedMediaType(
                text=f"expected application/json, got {content_type}"
            )
        try:
            # orjson, and the stdlib for what orjson refuses: the stdlib's answers, faster.
            payload = codec.OrjsonModule.loads(raw)
        except codec.TooDeep:
            raise too_deep("the body", depth) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise web.HTTPBadRequest(text=f"malformed JSON: {exc}") from None
    if codec.exceeds_depth(payload, depth):
        raise too_deep("the body", depth)
    if not isinstance(payload, dict):
        details = [{"loc": [], "msg": "expected a JSON object", "type": "model_type"}]
        raise Invalid("the body must be a JSON object", details=details)
    # Strict: a JSON body says its types, so `false` or `"5"` is no integer, as the schema says.
    return model.model_validate(payload, strict=True)


def too_deep(what: str, depth: int) -> Invalid:
    """A JSON document nested past MAX_JSON_DEPTH: well-formed, but over a bound (422)."""
    message = f"nested deeper than {depth} levels"
    details = [{"loc": [], "msg": f"JSON {message}", "type": "json_depth"}]
    return Invalid(f"{what} is {message}", details=details)


def parse_query(request: web.Request, model: type[Model]) -> Model:
    return model.model_validate(dict(request.query))


def parse_headers(request: web.Request, model: type[Model]) -> Model:
    """The headers a model names (by alias), validated like a body: 422 when they break it."""
    headers = request.headers
    return model.model_validate({n: headers[n] for n in _header_names(model) if n in headers})


@functools.cache
def _header_names(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(info.alias or name for name, info in model.model_fields.items())


def path_value(request: web.Request, name: str, adapter: TypeAdapter[Any]) -> Any:
    """A path parameter that breaks its documented type names no resource: 404."""
    try:
        return adapter.validate_python(request.match_info[name])
    except ValidationError:
        raise web.HTTPNotFound() from None


def path_id(request: web.Request, name: str = "id") -> int:
    raw = request.match_info[name]
    # No row has an id past the largest BIGINT (and the drivers would refuse it): not found.
    if not raw.isdigit() or len(raw) > 19 or not 1 <= int(raw) <= MAX_ID:
        raise web.HTTPNotFound()
    return int(raw)


@dataclass(frozen=True, slots=True)
class Operation:
    """One documented endpoint, collected for the OpenAPI document."""

    method: str
    path: str
    summary: str
    status: int
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    headers: type[BaseModel] | None = None
    # path parameters other than `{id:[0-9]+}` (a positive integer), with their types
    path_types: Mapping[str, TypeAdapter[Any]] = field(default_factory=dict)
    response: type[BaseModel] | None = None
    scope: str | None = None
    auth: bool = True
    tags: tuple[str, ...] = ()
    # answers besides the generic ones (401, 403, 422, ...): status -> when
    errors: Mapping[int, str] = field(default_factory=dict)
    # the success answer may be an HTML page (for browsers) besides JSON
    html: bool = False
    # the success answer is an endless text/event-stream (Server-Sent Events)
    event_stream: bool = False


@dataclass
class ApiRoutes:
    """A RouteTableDef that also remembers what each route takes and gives."""

    prefix: str = ""
    table: web.RouteTableDef = field(default_factory=web.RouteTableDef)
    operations: list[Operation] = field(default_factory=list)

    def route(self, method: str, path: str, **spec: Any) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            full = self.prefix + path
            summary = spec.pop("summary", None) or (handler.__doc__ or "").strip().splitlines()[0]
            self.operations.append(Operation(method=method, path=full, summary=summary, **spec))
            self.table.route(method, full)(handler)
            return handler

        return register
