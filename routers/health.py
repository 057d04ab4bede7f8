"""Probes: live is the process; ready is the process and everything it depends on."""

from __future__ import annotations

import asyncio

from aiohttp import web
from sqlalchemy import text

from backend import keys

from .http import ApiRoutes

api = ApiRoutes()
TAGS = ("health",)


@api.route("GET", "/health/live", status=200, auth=False, tags=TAGS)
async def live(_request: web.Request) -> web.Response:
    """The process is up."""
    return web.json_response({"status": "ok"})


@api.route("GET", "/health/ready", status=200, auth=False, tags=TAGS)
async def ready(request: web.Request) -> web.Response:
    """200 when the database (and Redis, if configured) answer; 503 with the reason if not."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(3):
            async with request.app[keys.ENGINE].connect() as connection:
                await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure means "not ready", with the reason
        checks["database"] = f"unavailable: {type(exc).__name__}: {exc}"[:300]
    for name, probe in request.app[keys.READY_PROBES].items():
        checks[name] = await probe()
    healthy = all(value == "ok" for value in checks.values())
    status = 200 if healthy else 503
    return web.json_response(
        {"status": "ok" if healthy else "unavailable", "checks": checks}, status=status
    )
