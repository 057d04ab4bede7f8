"""REST (admin): API keys for services; create (shown once), list, revoke."""

from __future__ import annotations

from aiohttp import web

from backend import keys
from backend.admin_schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyList
from backend.security import SCOPE_ADMIN

from .http import ApiRoutes, authorize, json_response, parse_body, path_id

api = ApiRoutes(prefix="/api/v1")
TAGS = ("admin",)


@api.route(
    "POST", "/admin/api-keys", body=ApiKeyCreate, response=ApiKeyCreated, status=201,
    scope=SCOPE_ADMIN, tags=TAGS, errors={409: "API_KEYS_MAX keys exist already"},
)  # fmt: skip
async def create_api_key(request: web.Request) -> web.Response:
    """Create an API key; the answer holds the key, which is never shown again."""
    principal = await authorize(request, SCOPE_ADMIN)
    body = await parse_body(request, ApiKeyCreate)
    created = await request.app[keys.API_KEYS].create(
        name=body.name, permissions=body.permissions, created_by=principal.publisher
    )
    return json_response(created, status=201)


@api.route("GET", "/admin/api-keys", response=ApiKeyList, status=200, scope=SCOPE_ADMIN, tags=TAGS)
async def list_api_keys(request: web.Request) -> web.Response:
    """The API keys not revoked, without the keys themselves."""
    await authorize(request, SCOPE_ADMIN)
    return json_response({"api_keys": await request.app[keys.API_KEYS].list()})


@api.route(
    "DELETE", "/admin/api-keys/{id:[0-9]+}", status=204, scope=SCOPE_ADMIN, tags=TAGS,
    errors={404: "no such key, or revoked already"},
)  # fmt: skip
async def revoke_api_key(request: web.Request) -> web.Response:
    """Revoke an API key: refused from now on by every process."""
    await authorize(request, SCOPE_ADMIN)
    await request.app[keys.API_KEYS].revoke(key_id=path_id(request))
    return web.Response(status=204)
