"""REST: the caller's notification preferences."""

from __future__ import annotations

from aiohttp import web

from backend import keys
from backend.schemas import Preferences, PreferencesUpdate
from backend.services import preferences as service

from .http import ApiRoutes, authenticate, parse_body

api = ApiRoutes(prefix="/api/v1")
TAGS = ("preferences",)


@api.route("GET", "/preferences", response=Preferences, status=200, tags=TAGS)
async def get_preferences(request: web.Request) -> web.Response:
    """The caller's preferences (defaults until changed)."""
    claims = authenticate(request)
    prefs = await service.get_preferences(
        sessionmaker=request.app[keys.SESSIONMAKER], user_id=claims.sub
    )
    return web.json_response(prefs.model_dump(mode="json", exclude_none=True))


@api.route(
    "PUT", "/preferences", body=PreferencesUpdate, response=Preferences, status=200, tags=TAGS
)
async def put_preferences(request: web.Request) -> web.Response:
    """Change any subset of the caller's preferences."""
    claims = authenticate(request)
    update = await parse_body(request, PreferencesUpdate)
    prefs = await service.update_preferences(
        sessionmaker=request.app[keys.SESSIONMAKER], user_id=claims.sub, update=update
    )
    return web.json_response(prefs.model_dump(mode="json", exclude_none=True))
