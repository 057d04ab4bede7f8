"""The application factory: nothing happens at import time, everything opens in cleanup_ctx."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from . import keys, migrate
from .config import Settings
from .db import create_engine, create_sessionmaker
from .realtime.connections import ConnectionManager
from .realtime.notifier import Notifier
from .realtime.server import create_socket_server
from .security import TokenVerifier
from .services.notifications import NotificationService

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    engine = create_engine(settings)
    if settings.auto_migrate:
        await migrate.upgrade(engine)
    sessionmaker = create_sessionmaker(engine)
    app[keys.ENGINE] = engine
    app[keys.SESSIONMAKER] = sessionmaker
    app[keys.NOTIFICATIONS] = NotificationService(
        sessionmaker=sessionmaker, notifier=app[keys.NOTIFIER]
    )
    yield
    await engine.dispose()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """A Redis client for the readiness probe; the Socket.IO manager keeps its own."""
    url = app[keys.SETTINGS].redis_url
    if not url:
        yield
        return
    import redis.asyncio as redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)

    async def probe() -> str:
        try:
            await client.ping()
        except Exception as exc:  # any failure means "not ready", with the reason
            return f"unavailable: {type(exc).__name__}: {exc}"[:300]
        return "ok"

    app[keys.READY_PROBES]["redis"] = probe
    yield
    await client.aclose()


async def shutdown_sockets(app: web.Application) -> None:
    """Disconnect clients cleanly before the web server goes away."""
    await app[keys.SIO].shutdown()


async def index(_request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(page)


def create_app(settings: Settings) -> web.Application:
    from routers import dev, health, notifications, openapi, preferences
    from routers.http import error_middleware
    from routers.socket_events import NotificationNamespace

    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=max(settings.max_body_bytes, settings.max_payload_bytes + 1024),
    )
    app[keys.SETTINGS] = settings
    app[keys.VERIFIER] = TokenVerifier(settings)
    app[keys.READY_PROBES] = {}
    sio = create_socket_server(settings)
    app[keys.SIO] = sio
    app[keys.CONNECTIONS] = ConnectionManager()
    app[keys.NOTIFIER] = Notifier(sio)
    sio.register_namespace(NotificationNamespace(app))
    sio.attach(app, socketio_path="socket.io")

    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(redis_ctx)
    app.on_shutdown.append(shutdown_sockets)

    route_sets = [notifications.api, preferences.api, health.api, dev.api]
    for routes in route_sets:
        app.router.add_routes(routes.table)
    document = openapi.build_openapi(
        [op for routes in route_sets for op in routes.operations], version="0.1.0"
    )

    async def openapi_json(_request: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/api/v1/openapi.json", openapi_json)
    app.router.add_get("/", index)
    if STATIC_DIR.is_dir():
        app.router.add_static("/", STATIC_DIR)
    return app
