"""REST views of the real-time layer: the caller's own sessions, and admin stats and cleanup."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field

from backend import keys
from backend.realtime.maintenance import cleanup_stale
from backend.schemas import Strict
from backend.security import SCOPE_ADMIN

from .http import ApiRoutes, authenticate, authorize, parse_query

api = ApiRoutes(prefix="/api/v1")
TAGS = ("realtime",)


class SessionOut(BaseModel):
    sid: str
    user_id: str
    connected_at: float
    last_heartbeat: float
    transport: str
    remote_address: str | None
    user_agent: str | None
    rooms: list[str]


class WebsocketStatus(BaseModel):
    user_id: str
    online: bool
    connections: int
    sessions: list[SessionOut]


class WebsocketStats(BaseModel):
    connections: int
    online_users: int
    rooms: dict[str, int]
    transports: dict[str, int]
    events_in: int
    events_out: int
    total_connections: int
    uptime_seconds: float
    process: str
    processes: list[str]


class CleanupQuery(Strict):
    timeout_seconds: Annotated[float, Field(ge=0, le=86400 * 7)] = 300


class CleanupResult(BaseModel):
    cleaned: int
    sids: list[str]


@api.route(
    "GET", "/notifications/websocket/status", response=WebsocketStatus, status=200, tags=TAGS
)
async def status(request: web.Request) -> web.Response:
    """The caller's own real-time status across the cluster: online, connection count, sessions."""
    claims = authenticate(request)
    sessions = await request.app[keys.CLUSTER].user_sessions(claims.sub)
    return web.json_response(
        {
            "user_id": claims.sub,
            "online": bool(sessions),
            "connections": len(sessions),
            "sessions": sessions,
        }
    )


@api.route(
    "GET", "/notifications/websocket/stats", response=WebsocketStats, status=200,
    scope=SCOPE_ADMIN, tags=TAGS,
)  # fmt: skip
async def stats(request: web.Request) -> web.Response:
    """Cluster-wide: connections, online users, rooms, transports, events, uptime, processes."""
    await authorize(request, SCOPE_ADMIN)
    return web.json_response(await request.app[keys.CLUSTER].stats())


@api.route(
    "POST", "/notifications/websocket/cleanup", query=CleanupQuery, response=CleanupResult,
    status=200, scope=SCOPE_ADMIN, tags=TAGS,
)  # fmt: skip
async def cleanup(request: web.Request) -> web.Response:
    """Disconnect the sessions silent for longer than timeout_seconds, on every process."""
    await authorize(request, SCOPE_ADMIN)
    query = parse_query(request, CleanupQuery)
    app = request.app
    sids = await cleanup_stale(
        app[keys.SIO], app[keys.CONNECTIONS], query.timeout_seconds, app[keys.CLUSTER]
    )
    return web.json_response({"cleaned": len(sids), "sids": sids})
