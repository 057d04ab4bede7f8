"""One-click unsubscribe (RFC 8058): POST turns email off; GET only shows a confirm button."""

from __future__ import annotations

from html import escape

from aiohttp import web

from backend import keys
from backend.email import tokens
from backend.email.schemas import Unsubscribed, UnsubscribeQuery
from backend.services import emails as service

from .http import ApiRoutes, parse_query

api = ApiRoutes(prefix="/api/v1")
TAGS = ("email",)
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{title}</title></head>
<body style="font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem">
<h1 style="font-size:1.3rem">{title}</h1>{body}</body></html>"""


def _page(title: str, body: str) -> web.Response:
    return web.Response(text=PAGE.format(title=escape(title), body=body), content_type="text/html")


def _scope(request: web.Request) -> tokens.UnsubscribeScope:
    query = parse_query(request, UnsubscribeQuery)
    key = tokens.signing_key(request.app[keys.SETTINGS])
    if key is None:
        raise tokens.InvalidLink("unsubscribe links are not enabled on this server")
    return tokens.verify(key, query.token)


def _wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


INVALID_LINK = {400: "the link is forged, altered or expired, or links are not enabled"}


@api.route(
    "GET",
    "/unsubscribe",
    query=UnsubscribeQuery,
    status=200,
    auth=False,
    tags=TAGS,
    html=True,
    errors=INVALID_LINK,
)
async def confirm_page(request: web.Request) -> web.Response:
    """A page with one button; a GET never unsubscribes (link scanners follow GETs)."""
    scope = _scope(request)  # a bad link is a JSON 400, like every error here
    what = "these emails" if scope.types and not scope.all_email else "all notification emails"
    form = (
        f'<p>Stop {what}?</p><form method="post" action="{escape(request.path_qs)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return _page("Unsubscribe", form)


@api.route(
    "POST",
    "/unsubscribe",
    query=UnsubscribeQuery,
    response=Unsubscribed,
    status=200,
    auth=False,
    tags=TAGS,
    html=True,
    errors={**INVALID_LINK, 413: "body too large"},
)
async def unsubscribe(request: web.Request) -> web.Response:
    """One click from the mail client (body `List-Unsubscribe=One-Click`) or the page."""
    await request.read()  # the RFC 8058 body carries nothing the token does not
    scope = _scope(request)
    prefs = await service.unsubscribe(sessionmaker=request.app[keys.SESSIONMAKER], scope=scope)
    if _wants_html(request):
        return _page("Unsubscribed", "<p>You will no longer receive these emails.</p>")
    return web.json_response(
        {
            "unsubscribed": True,
            "user_id": scope.user_id,
            "email_notifications": prefs.email_notifications,
            "types": list(scope.types),
        }
    )
