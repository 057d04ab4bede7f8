"""REST for operators: one notification's activity timeline, and a search over all steps."""

from __future__ import annotations

from aiohttp import web

from backend import keys
from backend.activity_schemas import ActivityList, ActivityQuery, Timeline, TimelineQuery
from backend.security import SCOPE_ADMIN
from backend.services import activity as service

from .http import ApiRoutes, authorize, json_response, parse_query, path_id

api = ApiRoutes(prefix="/api/v1")
TAGS = ("admin",)


@api.route(
    "GET",
    "/admin/notifications/{id:[0-9]+}/activity",
    query=TimelineQuery,
    response=Timeline,
    status=200,
    scope=SCOPE_ADMIN,
    tags=TAGS,
)
async def notification_activity(request: web.Request) -> web.Response:
    """What happened to one notification (any user's, deleted ones too), in order."""
    await authorize(request, SCOPE_ADMIN)
    query = parse_query(request, TimelineQuery)
    body = await service.timeline(
        sessionmaker=request.app[keys.SESSIONMAKER],
        notification_id=path_id(request),
        limit=query.limit,
    )
    return json_response(body)


@api.route(
    "GET",
    "/admin/activity",
    query=ActivityQuery,
    response=ActivityList,
    status=200,
    scope=SCOPE_ADMIN,
    tags=TAGS,
)
async def search_activity(request: web.Request) -> web.Response:
    """Recorded steps, newest first: filter by user, notification type, kind and time."""
    await authorize(request, SCOPE_ADMIN)
    query = parse_query(request, ActivityQuery)
    items, next_cursor = await service.search(
        sessionmaker=request.app[keys.SESSIONMAKER],
        where=service.Search(
            user_id=query.user_id,
            type=query.type,
            kind=query.kind,
            since=query.since,
            until=query.until,
        ),
        limit=query.limit,
        cursor=int(query.cursor) if query.cursor else None,
    )
    return json_response({"activity": items, "next_cursor": next_cursor})
