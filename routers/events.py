"""Events from other services: Dapr's subscription list and its delivery route, and the audit.

Answers follow Dapr's subscriber contract: 200 {"status": "SUCCESS"} when stored (or stored
before), 200 {"status": "DROP"} for an event that can never succeed (Dapr drops it; a 4xx would
be redelivered, as would anything but 404), 503 {"status": "RETRY"} while the database is away.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from aiohttp import web

from backend import codec, keys
from backend.db import RETRY_AFTER_SECONDS
from backend.errors import Forbidden
from backend.events.cloudevents import (
    CloudEvent,
    MalformedEvent,
    is_binary,
    parse_binary,
    parse_structured,
)
from backend.events.schemas import (
    CloudEventBody,
    DaprAnswer,
    DaprSubscriptions,
    EventList,
    EventQuery,
)
from backend.security import SCOPE_ADMIN, SCOPE_PUBLISH, AuthError
from backend.services.events import Outcome

from .deadlines import TOO_LARGE_ATTRIBUTE
from .http import ApiRoutes, authorize, json_response, parse_query

EVENTS_ROUTE = "/api/v1/events"
dapr = ApiRoutes()
api = ApiRoutes(prefix="/api/v1")
STRUCTURED = ("application/cloudevents+json", "application/json", "")


@dapr.route("GET", "/dapr/subscribe", response=DaprSubscriptions, status=200, auth=False,
            tags=("events",))  # fmt: skip
async def dapr_subscribe(request: web.Request) -> web.Response:
    """Dapr's programmatic subscription: each of DAPR_TOPICS delivered to /api/v1/events."""
    settings = request.app[keys.SETTINGS]
    return json_response(
        [
            {"pubsubname": settings.dapr_pubsub_name, "topic": topic, "route": EVENTS_ROUTE}
            for topic in settings.dapr_topics
        ]
    )


async def _authorize(request: web.Request) -> None:
    """The sidecar's `dapr-api-token` (when DAPR_API_TOKEN is set), or a publisher's JWT."""
    expected = request.app[keys.SETTINGS].dapr_api_token
    given = request.headers.get("dapr-api-token")
    if expected is not None and given is not None:
        if not secrets.compare_digest(given.encode(), expected.get().encode()):
            raise AuthError("invalid dapr-api-token")
        return
    principal = await authorize(request, SCOPE_PUBLISH)
    if not principal.any_user:
        # Mappings decide the recipients of an event: only a key that may notify anyone.
        raise Forbidden("events may notify any user: this API key needs permission any_user")


def _answer(outcome: Outcome) -> web.Response:
    body: dict[str, Any] = {"status": outcome.dapr_status}
    if outcome.reason is not None:
        body["reason"] = outcome.reason
    if outcome.notification_ids:
        body["notification_ids"] = list(outcome.notification_ids)
    if outcome.status == "duplicate":
        body["duplicate"] = True
    if outcome.status != "retry":
        return json_response(body)
    # Dapr redelivers on RETRY; the error body keeps the server's error contract for others.
    body["error"] = {"code": "unavailable", "message": "the database is unavailable; retry"}
    response = json_response(body, status=503)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class _Unreadable(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


async def _read(request: web.Request) -> bytes:
    limit = request.app[keys.SETTINGS].max_body_bytes
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _Unreadable("too_large", f"the body is over {limit} bytes") from None
    if len(raw) > limit:  # the app's client_max_size may be larger (MAX_PAYLOAD_BYTES)
        raise _Unreadable("too_large", f"the body is over {limit} bytes")
    return raw


def _decode(raw: bytes, depth: int) -> Any:
    try:
        document = codec.loads(raw)
    except codec.TooDeep:
        raise _Unreadable("too_deep", f"nested deeper than {depth} levels") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Unreadable("malformed", f"malformed JSON: {exc}") from None
    if codec.exceeds_depth(document, depth):
        raise _Unreadable("too_deep", f"nested deeper than {depth} levels")
    return document


def _event(request: web.Request, raw: bytes) -> CloudEvent:
    depth = request.app[keys.SETTINGS].max_json_depth
    content_type = request.content_type
    if is_binary(request.headers) and content_type != "application/cloudevents+json":
        if content_type in ("", "application/json") or content_type.endswith("+json"):
            data = _decode(raw, depth) if raw else None
        else:
            try:
                data = raw.decode()
            except UnicodeDecodeError:
                raise _Unreadable("malformed", "binary data is not UTF-8 text") from None
        return parse_binary(request.headers, data)
    if content_type not in STRUCTURED:
        raise _Unreadable("malformed", f"not a CloudEvent: {content_type} without ce-* headers")
    # Structured: the event's data is one level down (two in Dapr's wrapping, still its data).
    return parse_structured(_decode(raw, depth + 1))


@api.route("POST", "/events", body=CloudEventBody, response=DaprAnswer, status=200,
           scope=SCOPE_PUBLISH, tags=("events",),
           summary="Deliver a CloudEvent (Dapr's subscription route): SUCCESS, DROP or RETRY; "
           "a Bearer JWT with notifications:publish, or the dapr-api-token header")  # fmt: skip
async def post_event(request: web.Request) -> web.Response:
    """Ingest one CloudEvent, structured or binary, as a Dapr sidecar delivers it."""
    await _authorize(request)
    ingest = request.app[keys.EVENTS]
    try:
        event = _event(request, await _read(request))
    except _Unreadable as exc:
        return _answer(ingest.drop_malformed(exc.reason, kind=exc.kind))
    except MalformedEvent as exc:
        return _answer(ingest.drop_malformed(str(exc)))
    return _answer(await ingest.ingest(event))


async def _too_large(request: web.Request) -> web.Response:
    """A body over MAX_BODY_BYTES can never succeed: DROP (after the caller is authorized)."""
    await _authorize(request)
    limit = request.app[keys.SETTINGS].max_body_bytes
    reason = f"the body is over {limit} bytes"
    return _answer(request.app[keys.EVENTS].drop_malformed(reason, kind="too_large"))


setattr(post_event, TOO_LARGE_ATTRIBUTE, _too_large)


@api.route("GET", "/admin/events", query=EventQuery, response=EventList, status=200,
           scope=SCOPE_ADMIN, tags=("admin",))  # fmt: skip
async def list_events(request: web.Request) -> web.Response:
    """The ingested events in the order received (the audit trail), by subject, type, time."""
    await authorize(request, SCOPE_ADMIN)
    query = parse_query(request, EventQuery)
    items, next_cursor = await request.app[keys.EVENTS].history(
        subject=query.subject,
        type=query.type,
        since=query.since,
        until=query.until,
        limit=query.limit,
        cursor=int(query.cursor) if query.cursor else None,
    )
    return json_response({"events": items, "next_cursor": next_cursor})
