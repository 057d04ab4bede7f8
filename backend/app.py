"""The application factory: nothing happens at import time, everything opens in cleanup_ctx."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from . import ingest as redis_ingest
from . import keys, migrate
from .config import Settings
from .db import create_engine, create_sessionmaker, is_unavailable
from .email.worker import EmailWorker
from .events.mappings import load_mappings
from .logs import Throttled, install_client_error_filter
from .metrics import Metrics
from .realtime.bus import BusWatch
from .realtime.cluster import Cluster
from .realtime.connections import ConnectionManager
from .realtime.delivery import DeliveryControl, RedisManager
from .realtime.engine import end_for_reconnect
from .realtime.limits import SessionLimiter, TokenBucket, UserLimiter
from .realtime.maintenance import cleanup_loop, stats_loop
from .realtime.notifier import Notifier
from .realtime.recovery import Recovery
from .realtime.server import create_socket_server
from .realtime.sse import StreamHub
from .realtime.tickets import TicketStore
from .redis_url import open_redis
from .security import TokenVerifier
from .services.activity import PushLog
from .services.api_keys import ApiKeys
from .services.events import EventIngest
from .services.notifications import NotificationService
from .services.personal_data import PersonalData
from .services.retention import Retention, RetentionPolicy, retention_loop
from .services.templates import Templates
from .services.users import UserDirectory
from .shutdown import ShutdownClock

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    engine = create_engine(settings)
    app[keys.METRICS].watch_engine(engine)
    if settings.auto_migrate:
        await migrate.upgrade(engine)
    sessionmaker = create_sessionmaker(engine)
    app[keys.ENGINE] = engine
    app[keys.SESSIONMAKER] = sessionmaker
    templates = app[keys.TEMPLATES] = Templates(sessionmaker=sessionmaker, settings=settings)
    service = NotificationService(
        sessionmaker=sessionmaker,
        notifier=app[keys.NOTIFIER],
        metrics=app[keys.METRICS],
        templates=templates,
    )
    app[keys.NOTIFICATIONS] = service
    app[keys.USERS] = UserDirectory(sessionmaker)
    app[keys.API_KEYS] = ApiKeys(sessionmaker=sessionmaker, settings=settings)
    app[keys.EVENTS] = EventIngest(
        sessionmaker=sessionmaker,
        notifications=service,
        mappings=load_mappings(settings.event_mappings),
        max_data_bytes=settings.max_data_bytes,
        max_json_depth=settings.max_json_depth,
    )
    app[keys.RETENTION] = Retention(
        sessionmaker=sessionmaker,
        events=app[keys.EVENTS],
        policy=RetentionPolicy(
            read_days=settings.retention_read_days,
            deleted_days=settings.retention_deleted_days,
            email_log_days=settings.retention_email_log_days,
            events_days=settings.events_retention_days,
            batch=settings.retention_batch_size,
            pause=settings.retention_batch_pause_seconds,
        ),
    )
    app[keys.PERSONAL_DATA] = PersonalData(sessionmaker, batch=settings.retention_batch_size)

    async def fetch(user_id: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        return await service.after_seq(user_id=user_id, after_seq=after_seq, limit=limit)

    async def start(
        user_id: str, after_seq: int, limit: int, max_missing: int
    ) -> tuple[int, bool, list[dict[str, Any]]]:
        backlog = await service.backlog(
            user_id=user_id, after_seq=after_seq, limit=limit, max_missing=max_missing
        )
        return backlog.last_seq, backlog.too_far, backlog.page

    app[keys.RECOVERY] = Recovery(
        control=app[keys.DELIVERY],
        notifier=app[keys.NOTIFIER],
        start=start,
        fetch=fetch,
        page_size=settings.recovery_page_size,
        max_notifications=settings.recovery_max_notifications,
    )
    push_log = app[keys.PUSH_LOG] = PushLog(
        sessionmaker=sessionmaker,
        max_queued=settings.activity_queue_max,
        linger=settings.activity_flush_seconds,
    )
    connections = app[keys.CONNECTIONS]

    def on_pushed(notification: dict[str, Any], room: str | None, sid: str, sessions: int) -> None:
        """Live pushes go to a user's room; recovery, sync and catch-up pages to one session."""
        if room is not None and room.startswith("user:"):
            push_log.pushed(notification, room[5:], sessions, "live")
        elif (connection := connections.get(sid)) is not None:
            push_log.pushed(notification, connection.user_id, sessions, "recovery")

    app[keys.DELIVERY].on_pushed = on_pushed
    writer = asyncio.create_task(push_log.run(), name="activity-writer")
    yield
    app[keys.DELIVERY].on_pushed = None
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    with contextlib.suppress(Exception):  # what is left, once; an outage drops it (counted)
        await push_log.flush()
    await engine.dispose()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """A Redis client on REDIS_URL (Sentinel too) for the readiness probe and the cluster's stats;
    the Socket.IO manager keeps its own on the same URL."""
    url = app[keys.SETTINGS].redis_url
    if not url:
        yield
        return
    client = open_redis(url, socket_connect_timeout=3, socket_timeout=3)

    async def probe() -> str:
        try:
            await client.ping()
        except Exception as exc:  # any failure means "not ready", with the reason
            return f"unavailable: {type(exc).__name__}: {exc}"[:300]
        return "ok"

    app[keys.READY_PROBES]["redis"] = probe
    cluster = app[keys.CLUSTER]
    cluster.use_redis(client)
    app[keys.STREAM_TICKETS].use_redis(client)  # single use across processes
    view = asyncio.create_task(cluster.run(), name="cluster-view")
    yield
    view.cancel()
    await asyncio.gather(view, return_exceptions=True)
    await cluster.leave()
    await client.aclose()


async def bus_ctx(app: web.Application) -> AsyncIterator[None]:
    """With REDIS_URL: the manager's listener from the start (python-socketio would start it at
    the first connect), the canary, and the catch-up workers; Redis may be away meanwhile."""
    manager = app[keys.SIO].manager
    if not isinstance(manager, RedisManager):
        yield
        return
    settings = app[keys.SETTINGS]
    sio = app[keys.SIO]
    connections = app[keys.CONNECTIONS]
    notifier = app[keys.NOTIFIER]

    def sessions() -> list[tuple[str, str]]:
        return [(c.sid, c.user_id) for c in connections.all() if c.live]

    async def close(sid: str) -> None:
        """Closed the way every official client reconnects from, with its last_seq (the same
        close as shutdown and a deferred recovery: engine.end_for_reconnect)."""
        eio_sid = manager.eio_sid_from_sid(sid, "/")
        sock = sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
        if sock is not None:
            await end_for_reconnect(sock)

    watch = BusWatch(
        manager=manager,
        control=app[keys.DELIVERY],
        sessions=sessions,
        recovery=app[keys.RECOVERY],
        send=notifier.emit_to_local_session,
        close=close,
        interval=settings.bus_canary_interval_seconds,
        timeout=settings.bus_canary_timeout_seconds,
        concurrency=settings.bus_catchup_concurrency,
    )
    manager.watch = watch
    app[keys.BUS] = watch

    async def probe() -> str:
        reason = watch.reason()
        return "ok" if reason is None else f"deaf: {reason}"

    app[keys.READY_PROBES]["bus"] = probe
    if not sio.manager_initialized:
        sio.manager_initialized = True
        manager.initialize()
    await watch.wait_first_outcome(settings.bus_canary_interval_seconds)
    tasks = [asyncio.create_task(watch.run(), name="bus-canary")]
    tasks += [
        asyncio.create_task(watch.work(), name=f"bus-catch-up-{n}")
        for n in range(settings.bus_catchup_concurrency)
    ]
    yield
    manager.watch = None
    thread = getattr(manager, "thread", None)
    if thread is not None:
        tasks.append(thread)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if manager.redis is not None:
        with contextlib.suppress(Exception):
            await manager.redis.aclose()


async def purge_loop(service: NotificationService, *, hours: float) -> None:
    """Hourly: forget Idempotency-Keys older than their retention."""
    while True:
        try:
            older_than = datetime.now(UTC) - timedelta(hours=hours)
            await service.purge_idempotency_keys(older_than=older_than)
        except Exception as exc:
            if not is_unavailable(exc):
                log.exception("purging idempotency keys failed; trying again next hour")
            else:  # an outage is one line, not a traceback (the email worker says more)
                log.warning("purging idempotency keys: the database is unavailable; next hour")
        await asyncio.sleep(3600)


async def background_ctx(app: web.Application) -> AsyncIterator[None]:
    """Stale-session cleanup and the stats line; cancelled, then awaited, on the way out."""
    settings = app[keys.SETTINGS]
    tasks = [
        asyncio.create_task(
            cleanup_loop(
                app[keys.SIO],
                app[keys.CONNECTIONS],
                interval_seconds=settings.cleanup_interval_seconds,
                timeout_seconds=settings.stale_timeout_seconds,
            ),
            name="stale-cleanup",
        ),
        asyncio.create_task(
            stats_loop(app[keys.CONNECTIONS], interval_seconds=settings.stats_interval_seconds),
            name="stats-log",
        ),
    ]
    tasks.append(
        asyncio.create_task(
            purge_loop(app[keys.NOTIFICATIONS], hours=settings.idempotency_ttl_hours),
            name="idempotency-purge",
        )
    )
    tasks.append(
        asyncio.create_task(
            retention_loop(app[keys.RETENTION], interval=settings.retention_interval_seconds),
            name="retention",
        )
    )
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def email_worker_ctx(app: web.Application) -> AsyncIterator[None]:
    """The email queue worker and digest scheduler, when EMAIL_WORKER_ENABLED (the default)."""
    settings = app[keys.SETTINGS]
    if not settings.email_worker_enabled:
        yield
        return
    worker = EmailWorker(
        sessionmaker=app[keys.SESSIONMAKER], settings=settings, metrics=app[keys.METRICS]
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop=stop), name="email-worker")
    yield
    stop.set()  # let a batch in flight finish, so its rows are not left to the lease
    # Within the shutdown grace, keeping a moment for the resources closed after this; a send
    # cut short leaves its row to the lease, and queued rows stay queued.
    remaining = app[keys.SHUTDOWN].remaining()
    wait = min(settings.smtp_timeout_seconds + 5, max(remaining - 0.5, 0.1))
    done, _ = await asyncio.wait([task], timeout=wait)
    if not done:
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def redis_ingest_ctx(app: web.Application) -> AsyncIterator[None]:
    """Redis channels and streams in, when INGEST_REDIS_CHANNELS or INGEST_REDIS_STREAMS name
    some; cancelled, then awaited within the shutdown grace. A stream message cut short is
    still pending: another process (or this one's successor) claims it and stores it once."""
    settings = app[keys.SETTINGS]
    if not (settings.ingest_redis_channels or settings.ingest_redis_streams):
        yield
        return
    handler, loops = redis_ingest.build(
        settings,
        ingest=app[keys.EVENTS],
        notifications=app[keys.NOTIFICATIONS],
        consumer=app[keys.PROCESS_ID],
    )
    app[keys.REDIS_INGEST] = handler
    tasks = [asyncio.create_task(loop, name=name) for name, loop in loops.items()]
    yield
    for task in tasks:
        task.cancel()
    remaining = app[keys.SHUTDOWN].remaining()
    await asyncio.wait(tasks, timeout=max(remaining - 0.5, 0.1))


# At most one "database unavailable" line per interval from requests and socket events.
UNAVAILABLE_LOG_INTERVAL_SECONDS = 10.0

# The longest wait for clients to close their websockets on shutdown, within the grace.
SOCKET_CLOSE_WAIT_SECONDS = 1.0


async def mark_shutdown(app: web.Application) -> None:
    """The first on_shutdown hook: the grace starts now."""
    app[keys.SHUTDOWN].begin()


async def shutdown_sockets(app: web.Application) -> None:
    """Close every client's transport before the web server goes away.

    python-socketio's shutdown() only stops its background tasks; without this, open websockets
    would hold the exit for a ping interval plus timeout. Websockets are closed under their
    clients (not a Socket.IO disconnect, not an Engine.IO CLOSE, which python-engineio's client
    takes as final), so every official client reconnects, with backoff and `last_seq`.
    """
    sio = app[keys.SIO]
    # Server-Sent Events streams end now: their clients reconnect with Last-Event-ID.
    app[keys.STREAMS].close_all("server shutting down")
    sockets = list(sio.eio.sockets.values())
    for sock in sockets:
        await end_for_reconnect(sock)
    # A client that does not answer the close frame would hold the exit, so after a grace its
    # transport is cut.
    loop = asyncio.get_running_loop()
    grace = app[keys.SETTINGS].shutdown_grace_seconds
    deadline = loop.time() + min(SOCKET_CLOSE_WAIT_SECONDS, grace / 5)
    while loop.time() < deadline and any(getattr(s, "direct_ws", None) for s in sockets):
        await asyncio.sleep(0.05)
    for sock in sockets:
        ws = getattr(sock, "direct_ws", None)
        if ws is not None and ws.transport is not None:
            ws.transport.abort()
    await sio.shutdown()


async def index(_request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(page)


async def admin_page(_request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "admin" / "index.html"
    if not page.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(page)


async def admin_redirect(_request: web.Request) -> web.StreamResponse:
    """/admin to /admin/, so the page's relative paths resolve under it."""
    raise web.HTTPPermanentRedirect("/admin/")


def worker_metrics(
    settings: Settings, registry: CollectorRegistry
) -> contextlib.AbstractAsyncContextManager[None]:
    """`python -m backend worker` has no web app: its registry is served on METRICS_PORT when
    set (with METRICS_TOKEN when set), by the same listener as the server's."""
    from routers.metrics import serve_registry

    return serve_registry(settings, registry)


def create_app(settings: Settings) -> web.Application:
    from routers import (
        admin_activity,
        admin_email,
        admin_overview,
        api_keys,
        dev,
        events,
        health,
        metrics,
        notifications,
        openapi,
        preferences,
        privacy,
        stream,
        templates,
        topics,
        unsubscribe,
        websocket_admin,
    )
    from routers.access import access_middleware, add_request_id
    from routers.deadlines import body_deadline_middleware
    from routers.http import error_middleware
    from routers.socket_events import NotificationNamespace

    app = web.Application(
        middlewares=[
            access_middleware,
            error_middleware,
            body_deadline_middleware(settings.request_body_timeout_seconds),
        ],
        client_max_size=max(settings.max_body_bytes, settings.max_payload_bytes + 1024),
        # aiohttp closes a connection whose next request's headers are not complete this long
        # after it opened or answered the last one: the header deadline, and the keep-alive.
        # No SO_KEEPALIVE on each accepted socket (a socket option call per connection, ≈ 1 %
        # of a connect storm): with the kernel's default two idle hours before the first probe
        # it finds nothing that the deadlines above and Engine.IO's pings do not find first.
        handler_args={
            "keepalive_timeout": settings.request_header_timeout_seconds,
            "tcp_keepalive": False,
        },
    )
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = Metrics(max_types=settings.metrics_max_types)
    install_client_error_filter()
    app[keys.SHUTDOWN] = ShutdownClock(settings.shutdown_grace_seconds)
    app[keys.UNAVAILABLE_LOG] = Throttled(
        logging.getLogger("backend.unavailable"), UNAVAILABLE_LOG_INTERVAL_SECONDS
    )
    app[keys.VERIFIER] = TokenVerifier(settings)
    app[keys.READY_PROBES] = {}
    control = DeliveryControl(
        rate=settings.outbound_rate_per_second, burst=settings.outbound_rate_per_second
    )
    app[keys.DELIVERY] = control
    app[keys.INBOUND_LIMITER] = SessionLimiter(
        settings.event_rate_per_second, settings.event_burst, max_strikes=settings.event_burst
    )
    app[keys.CONNECT_BUCKET] = TokenBucket(
        settings.connects_per_second, settings.connects_per_second
    )
    app[keys.EXPORT_LIMITER] = UserLimiter(settings.exports_per_hour)
    sio = create_socket_server(settings, control)
    app[keys.SIO] = sio
    connections = app[keys.CONNECTIONS] = ConnectionManager()
    process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    app[keys.PROCESS_ID] = process_id

    def local_stats() -> dict[str, Any]:
        return {**connections.stats(), "events_out": control.events_out, "process": process_id}

    def local_counters() -> dict[str, Any]:
        return {**connections.counters(), "events_out": control.events_out}

    cluster = app[keys.CLUSTER] = Cluster(
        connections=connections,
        process_id=process_id,
        local=local_stats,
        counters=local_counters,
        ttl_seconds=settings.cluster_ttl_seconds,
        max_per_user=settings.max_connections_per_user,
    )
    app[keys.NOTIFIER] = Notifier(sio)
    app[keys.STREAMS] = StreamHub(
        sio=sio,
        connections=connections,
        control=control,
        max_per_user=settings.sse_max_streams_per_user,
        max_queued=settings.sse_max_queued_events,
        heartbeat_seconds=settings.sse_heartbeat_seconds,
    )
    app[keys.STREAM_TICKETS] = TicketStore(ttl_seconds=settings.sse_ticket_ttl_seconds)
    namespace = NotificationNamespace(app)
    cluster.on_evicted = namespace.evicted
    sio.register_namespace(namespace)
    if settings.admin_ui_username and settings.admin_ui_password:
        # The official Socket.IO Admin UI (https://admin.socket.io), never without credentials.
        admin = sio.instrument(
            auth={
                "username": settings.admin_ui_username,
                "password": settings.admin_ui_password.get(),
            },
            read_only=True,
        )
        serialize = admin.serialize_socket

        def serialize_socket(sid: str, namespace: str, eio_sid: str | None = None) -> Any:
            if sid not in control.streams:
                return serialize(sid, namespace, eio_sid)
            # A Server-Sent Events stream has no Engine.IO socket to describe.
            rooms = sio.manager.get_rooms(sid, namespace)
            return {"id": sid, "clientId": sid, "transport": "sse", "nsp": namespace,
                    "data": {}, "handshake": {}, "rooms": rooms}  # fmt: skip

        admin.serialize_socket = serialize_socket
    sio.attach(app, socketio_path="socket.io")

    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(bus_ctx)
    app.cleanup_ctx.append(background_ctx)
    app.cleanup_ctx.append(email_worker_ctx)
    app.cleanup_ctx.append(redis_ingest_ctx)
    app.on_shutdown.append(mark_shutdown)
    app.on_response_prepare.append(add_request_id)
    app.on_shutdown.append(shutdown_sockets)

    route_sets = [
        notifications.api,
        stream.api,
        preferences.api,
        privacy.api,
        topics.api,
        websocket_admin.api,
        health.api,
        dev.api,
    ]
    route_sets += [admin_email.api, unsubscribe.api, events.dapr, events.api]
    route_sets += [admin_activity.api, admin_overview.api, api_keys.api, templates.api]
    for routes in route_sets:
        app.router.add_routes(routes.table)
    document = openapi.build_openapi(
        [op for routes in route_sets for op in routes.operations], version="0.1.0"
    )
    # The document states the configured bound, not the model's hard one (RECEIPT_MAX_SEQS).
    receipt = document["components"]["schemas"]["Receipt"]["properties"]["seqs"]
    receipt["maxItems"] = settings.receipt_max_seqs

    async def openapi_json(_request: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/api/v1/openapi.json", openapi_json)
    metrics.setup_metrics(app)
    app.router.add_get("/", index)
    app.router.add_get("/admin/", admin_page)  # before the static folder of the same name
    app.router.add_get("/admin", admin_redirect)
    if STATIC_DIR.is_dir():
        # The page's assets: under /static/, and each folder of static/ at the root too, so
        # index.html may use relative paths (js/app.js) or absolute ones (/static/js/app.js).
        app.router.add_static("/static", STATIC_DIR)
        for folder in sorted(p for p in STATIC_DIR.iterdir() if p.is_dir()):
            app.router.add_static(f"/{folder.name}", folder)
    return app
