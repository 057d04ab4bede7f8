"""REST: a user's data, handed over (export) or erased, by the user or an admin."""

from __future__ import annotations

import logging
import math
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, create_model

from backend import keys
from backend.db import is_unavailable
from backend.models import utcnow
from backend.realtime.maintenance import disconnect_user
from backend.schemas import UserId
from backend.security import SCOPE_ADMIN
from backend.services.personal_data import PERSONAL_DATA

from .http import ApiRoutes, authenticate, authorize, json_response, path_value

log = logging.getLogger(__name__)
api = ApiRoutes(prefix="/api/v1")
TAGS = ("privacy",)
PATH = {"user_id": TypeAdapter(UserId)}

# The export document: one key per entry of the registry, so a table added there is documented.
Export = create_model(
    "Export",
    exported_at=(str, ...),
    user_id=(str, ...),
    **{  # type: ignore[call-overload]
        entry.name: (dict[str, Any] | None, ...) if entry.single else (list[dict[str, Any]], ...)
        for entry in PERSONAL_DATA
    },
)


class Erased(BaseModel):
    """How many rows of each kind were deleted, and how many sessions were disconnected."""

    erased: dict[str, int]
    disconnected: int


@api.route(
    "GET", "/me/export", response=Export, status=200, tags=TAGS,
    errors={429: "more exports by this user within the hour than EXPORTS_PER_HOUR"},
)  # fmt: skip
async def export(request: web.Request) -> web.StreamResponse:
    """Everything stored about the caller, as one JSON document, streamed."""
    claims = authenticate(request)
    app = request.app
    wait = app[keys.EXPORT_LIMITER].admit(claims.sub)
    if wait > 0:
        raise web.HTTPTooManyRequests(
            text="too many exports; try again later",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    chunks = app[keys.PERSONAL_DATA].export(
        user_id=claims.sub, now=utcnow(), page_size=app[keys.SETTINGS].export_page_size
    )
    # The first chunk comes after the first read: a database away is still a 503 here.
    first = await anext(chunks)
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/json",
            "Content-Disposition": 'attachment; filename="export.json"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    await response.write(first)
    try:
        async for chunk in chunks:
            await response.write(chunk)
    except Exception as exc:
        # The answer has started: it can only be cut short, never end as valid JSON.
        if is_unavailable(exc):
            app[keys.UNAVAILABLE_LOG].warning("export cut short: the database is unavailable")
        else:
            log.exception("export cut short")
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


async def _erase(request: web.Request, user_id: str) -> web.Response:
    app = request.app
    counts = await app[keys.PERSONAL_DATA].erase(user_id=user_id)
    # After the commit: a client that reconnects at once finds nothing of the old user.
    disconnected = await disconnect_user(
        app[keys.SIO], app[keys.CONNECTIONS], app[keys.CLUSTER], user_id
    )
    return json_response({"erased": counts, "disconnected": disconnected})


@api.route("DELETE", "/me", response=Erased, status=200, tags=TAGS)
async def erase_me(request: web.Request) -> web.Response:
    """Erase everything stored about the caller and disconnect their sessions."""
    claims = authenticate(request)
    return await _erase(request, claims.sub)


@api.route(
    "DELETE", "/admin/users/{user_id}", path_types=PATH, response=Erased, status=200,
    scope=SCOPE_ADMIN, tags=TAGS,
)  # fmt: skip
async def erase_user(request: web.Request) -> web.Response:
    """Erase everything stored about a user and disconnect their sessions, on every process."""
    await authorize(request, SCOPE_ADMIN)
    user_id: str = path_value(request, "user_id", PATH["user_id"])
    return await _erase(request, user_id)
