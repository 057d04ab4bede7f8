"""REST for operators: the email log, retrying a failed email, registering recipients."""

from __future__ import annotations

from aiohttp import web
from pydantic import TypeAdapter

from backend import keys
from backend.email.schemas import EmailLogList, EmailLogOut, EmailLogQuery, UserOut, UserUpdate
from backend.schemas import UserId
from backend.security import SCOPE_ADMIN
from backend.services import emails as service

from .http import ApiRoutes, authorize, parse_body, parse_query, path_id, path_value

api = ApiRoutes(prefix="/api/v1")
TAGS = ("admin",)
USER_PATH = {"user_id": TypeAdapter(UserId)}


@api.route(
    "GET",
    "/admin/email-logs",
    query=EmailLogQuery,
    response=EmailLogList,
    status=200,
    scope=SCOPE_ADMIN,
    tags=TAGS,
)
async def list_email_logs(request: web.Request) -> web.Response:
    """Every email tried, newest first: filter by status, user and creation time."""
    await authorize(request, SCOPE_ADMIN)
    query = parse_query(request, EmailLogQuery)
    items, next_cursor = await service.list_logs(
        sessionmaker=request.app[keys.SESSIONMAKER],
        status=query.status,
        user_id=query.user_id,
        since=query.since,
        until=query.until,
        limit=query.limit,
        cursor=int(query.cursor) if query.cursor else None,
    )
    return web.json_response({"email_logs": items, "next_cursor": next_cursor})


@api.route(
    "POST",
    "/admin/email-logs/{id:[0-9]+}/retry",
    response=EmailLogOut,
    status=200,
    scope=SCOPE_ADMIN,
    tags=TAGS,
    errors={409: "the email has not failed"},
)
async def retry_email(request: web.Request) -> web.Response:
    """Put a failed email back in the queue (409 unless it failed)."""
    await authorize(request, SCOPE_ADMIN)
    item = await service.retry(sessionmaker=request.app[keys.SESSIONMAKER], log_id=path_id(request))
    return web.json_response(item)


@api.route(
    "PUT",
    "/admin/users/{user_id}",
    path_types=USER_PATH,
    body=UserUpdate,
    response=UserOut,
    status=200,
    scope=SCOPE_ADMIN,
    tags=TAGS,
)
async def put_user(request: web.Request) -> web.Response:
    """Set a recipient's email address and name, so emails can reach them."""
    await authorize(request, SCOPE_ADMIN)
    user_id: str = path_value(request, "user_id", USER_PATH["user_id"])
    body = await parse_body(request, UserUpdate)
    user = await service.register_user(
        sessionmaker=request.app[keys.SESSIONMAKER],
        user_id=user_id,
        email=body.email,
        name=body.name,
    )
    return web.json_response(user)
