"""Development sign-in: only on the embedded default, where the secret was generated here."""

from __future__ import annotations

from aiohttp import web

from backend import keys
from backend.schemas import DevConfig, DevToken, DevTokenRequest
from backend.security import SCOPE_ADMIN, SCOPE_PUBLISH

from .http import ApiRoutes, parse_body

api = ApiRoutes(prefix="/api/v1")
TAGS = ("development",)
DEV_TOKEN_TTL = 86400


@api.route("GET", "/dev/config", response=DevConfig, status=200, auth=False, tags=TAGS)
async def dev_config(request: web.Request) -> web.Response:
    """Whether the development sign-in is available."""
    return web.json_response({"dev_sign_in": request.app[keys.SETTINGS].dev_mode})


@api.route(
    "POST",
    "/dev/token",
    body=DevTokenRequest,
    response=DevToken,
    status=200,
    auth=False,
    tags=TAGS,
    errors={404: "not the embedded default: a real secret is configured"},
)
async def dev_token(request: web.Request) -> web.Response:
    """Issue a token for any user name (embedded default only; 404 otherwise)."""
    return await _issue(request, SCOPE_PUBLISH)


@api.route(
    "POST",
    "/dev/admin-token",
    body=DevTokenRequest,
    response=DevToken,
    status=200,
    auth=False,
    tags=TAGS,
    errors={404: "not the embedded default: a real secret is configured"},
)
async def dev_admin_token(request: web.Request) -> web.Response:
    """Issue an admin-scope token for the admin page (embedded default only; 404 otherwise)."""
    return await _issue(request, SCOPE_ADMIN)


async def _issue(request: web.Request, scope: str) -> web.Response:
    """A token with this one scope, only on the embedded default with its generated secret."""
    if not request.app[keys.SETTINGS].dev_mode:
        raise web.HTTPNotFound()
    body = await parse_body(request, DevTokenRequest)
    token = request.app[keys.VERIFIER].issue(
        body.sub, scopes=(scope,), ttl_seconds=DEV_TOKEN_TTL, name=body.name
    )
    return web.json_response({"token": token, "expires_in": DEV_TOKEN_TTL})
