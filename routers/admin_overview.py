"""REST for the admin page: what the other admin routes do not give, in one answer."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from backend import keys
from backend.security import SCOPE_ADMIN
from backend.services import overview as service

from .http import ApiRoutes, authorize, json_response

api = ApiRoutes(prefix="/api/v1")
TAGS = ("admin",)


class Percentiles(BaseModel):
    count: int = Field(description="observations since this process started")
    p50: float | None = Field(description="seconds, estimated from the buckets; null if none")
    p95: float | None
    p99: float | None


class PerMinute(BaseModel):
    start: str = Field(description="the first minute (ISO 8601, UTC)")
    counts: list[int] = Field(description="one per minute, oldest first; the last is the current")


class Overview(BaseModel):
    process: str = Field(description="the process that answered (its counters are its own)")
    at: str
    notifications_stored: int
    notifications_per_minute: PerMinute
    deliveries: int
    coalesced: int
    commit_to_emit: Percentiles
    commit_to_receipt: Percentiles
    recoveries: dict[str, int] = Field(description="by outcome")
    refusals: dict[str, int] = Field(description="by reason")
    email_attempts: dict[str, int] = Field(description="attempts settled by this process")
    emails: dict[str, int] = Field(description="email log rows by status, all processes")


@api.route(
    "GET", "/admin/overview", response=Overview, status=200, scope=SCOPE_ADMIN, tags=TAGS
)  # fmt: skip
async def admin_overview(request: web.Request) -> web.Response:
    """This process's counters, latency percentiles, notifications per minute; the email queue."""
    await authorize(request, SCOPE_ADMIN)
    app = request.app
    body = await service.overview(
        sessionmaker=app[keys.SESSIONMAKER], metrics=app[keys.METRICS], process=app[keys.PROCESS_ID]
    )
    return json_response(body)
