"""REST (admin): notification templates per type; publishers then send {"template", ...}."""

from __future__ import annotations

from aiohttp import web
from pydantic import TypeAdapter

from backend import keys
from backend.admin_schemas import TemplateIn, TemplateOut
from backend.schemas import TypeName
from backend.security import SCOPE_ADMIN

from .http import ApiRoutes, authorize, json_response, parse_body, path_value

api = ApiRoutes(prefix="/api/v1")
TAGS = ("admin",)
PATH = {"name": TypeAdapter(TypeName)}


def name_of(request: web.Request) -> str:
    name: str = path_value(request, "name", PATH["name"])
    return name


@api.route(
    "PUT", "/admin/templates/{name}", body=TemplateIn, response=TemplateOut, status=200,
    scope=SCOPE_ADMIN, tags=TAGS, path_types=PATH,
    errors={409: "TEMPLATES_MAX templates exist already"},
)  # fmt: skip
async def put_template(request: web.Request) -> web.Response:
    """Create or replace a template (sandboxed Jinja2; checked before it is stored)."""
    await authorize(request, SCOPE_ADMIN)
    name = name_of(request)
    body = await parse_body(request, TemplateIn)
    return json_response(await request.app[keys.TEMPLATES].put(name=name, template=body))


@api.route(
    "GET", "/admin/templates/{name}", response=TemplateOut, status=200, scope=SCOPE_ADMIN,
    tags=TAGS, path_types=PATH,
)  # fmt: skip
async def get_template(request: web.Request) -> web.Response:
    """One template's sources."""
    await authorize(request, SCOPE_ADMIN)
    return json_response(await request.app[keys.TEMPLATES].get(name=name_of(request)))


@api.route(
    "DELETE", "/admin/templates/{name}", status=204, scope=SCOPE_ADMIN, tags=TAGS,
    path_types=PATH,
)  # fmt: skip
async def delete_template(request: web.Request) -> web.Response:
    """Delete a template; notifications rendered from it keep their content."""
    await authorize(request, SCOPE_ADMIN)
    await request.app[keys.TEMPLATES].delete(name=name_of(request))
    return web.Response(status=204)
