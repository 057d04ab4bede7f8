"""Server-Sent Events: the caller's notifications as `text/event-stream`, and the tickets a
browser's EventSource (which cannot send headers) opens it with."""

from __future__ import annotations

import asyncio
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field

from backend import keys
from backend.schemas import Seq, Strict
from backend.security import AuthError

from .http import ApiRoutes, authenticate, identify, json_response, parse_headers, parse_query

api = ApiRoutes(prefix="/api/v1")
TAGS = ("notifications",)
STREAM_PATH = "/api/v1/notifications/stream"

Ticket = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")]


class StreamQuery(Strict):
    # Never logged: the access log is off and our lines name the path only, not the query.
    ticket: Ticket | None = Field(
        default=None, description="from POST /notifications/stream-ticket; single use"
    )
    last_event_id: Seq | None = Field(
        default=None, description="resume after this seq, for clients that cannot set headers"
    )


class StreamHeaders(BaseModel):
    last_event_id: Seq | None = Field(
        default=None,
        alias="Last-Event-ID",
        description="resume after this seq (EventSource sends it on reconnect)",
    )


class StreamTicket(BaseModel):
    ticket: str
    expires_in: float


@api.route("POST", "/notifications/stream-ticket", response=StreamTicket, status=201, tags=TAGS)
async def stream_ticket(request: web.Request) -> web.Response:
    """A single-use ticket for ?ticket= on the stream, valid for SSE_TICKET_TTL_SECONDS."""
    claims = authenticate(request)
    store = request.app[keys.STREAM_TICKETS]
    ticket = await store.issue(claims)
    return json_response({"ticket": ticket, "expires_in": store.ttl_seconds}, status=201)


@api.route(
    "GET",
    "/notifications/stream",
    query=StreamQuery,
    headers=StreamHeaders,
    status=200,
    tags=TAGS,
    event_stream=True,
    summary="The caller's notifications as Server-Sent Events (text/event-stream).",
)
async def stream(request: web.Request) -> web.StreamResponse:
    """Events `notification` (id: its seq), `unread_count`, `notifications_read`, ...; a
    `: ping` comment every SSE_HEARTBEAT_SECONDS. Bearer token or ?ticket=."""
    query = parse_query(request, StreamQuery)
    after_seq = parse_headers(request, StreamHeaders).last_event_id
    if after_seq is None:
        after_seq = query.last_event_id
    if query.ticket is not None:
        claims = await request.app[keys.STREAM_TICKETS].claim(query.ticket)
        if claims is None:
            raise AuthError("invalid ticket: unknown, expired or already used")
        identify(claims.sub)
    else:
        claims = authenticate(request)
    app = request.app
    await app[keys.USERS].remember(claims.sub, claims.email, claims.name)
    hub = app[keys.STREAMS]
    sse = hub.open(
        claims.sub,
        hold=after_seq is not None,
        remote_address=request.remote,
        user_agent=request.headers.get("User-Agent"),
    )
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache, no-transform",
            "X-Accel-Buffering": "no",  # nginx: pass each event through at once
        }
    )
    recovering: asyncio.Task[None] | None = None
    try:
        await response.prepare(request)
        if after_seq is not None:
            recovering = asyncio.create_task(hub.recover(sse, app[keys.RECOVERY], after_seq))

        def client_gone() -> bool:
            transport = request.transport
            return transport is None or transport.is_closing()

        await hub.pump(sse, response.write, client_gone)
    finally:
        hub.close(sse.sid, "ended")
        if recovering is not None:
            recovering.cancel()
            await asyncio.gather(recovering, return_exceptions=True)
    return response
