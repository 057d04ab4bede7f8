"""The python-socketio AsyncServer, configured from Settings."""

from __future__ import annotations

import socketio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..codec import OrjsonModule
from ..config import Settings
from ..logs import library_logger
from .delivery import DeliveryControl, LocalManager, RedisManager
from .engine import SocketTable
from .fast import UncompressedWebSocket, WriterQueue, translate_request
from .guard import GuardedServer, ProtocolGuard, create_route


def create_socket_server(settings: Settings, control: DeliveryControl) -> socketio.AsyncServer:
    """Redis pub/sub between processes when REDIS_URL is set, so every process reaches every
    client; delivery control on every process either way."""
    manager: LocalManager | RedisManager
    if settings.redis_url:
        timeout = settings.bus_canary_timeout_seconds
        manager = RedisManager(
            settings.redis_url,
            redis_options={
                # One retry, at once: a pooled connection that Redis closed is replaced, and
                # Redis being away is known in milliseconds, not after redis-py's backoff.
                "retry": Retry(NoBackoff(), 1),
                "socket_connect_timeout": timeout,
            },
        )
        manager.retry_max = settings.bus_retry_max_seconds
        manager.publish_timeout = timeout
        manager.fanout_chunk = settings.bus_fanout_chunk
    else:
        manager = LocalManager()
    manager.delivery = control
    # None = same origin only; an empty list would switch the origin check off altogether.
    origins: str | list[str] | None = list(settings.cors_allowed_origins) or None
    if "*" in settings.cors_allowed_origins:
        origins = "*"
    elif settings.admin_ui_username:
        origins = [*(origins or []), "https://admin.socket.io"]
    sio = GuardedServer(
        guard=ProtocolGuard(max_malformed=settings.max_malformed_packets),
        connect_timeout=settings.connect_timeout_seconds,
        request_body_timeout=settings.request_body_timeout_seconds,
        async_mode="aiohttp",
        client_manager=manager,
        cors_allowed_origins=origins,
        # Events over max_payload_bytes get an error ack; far larger frames drop the connection.
        max_http_buffer_size=settings.max_payload_bytes * 4,
        ping_interval=settings.ping_interval_seconds,
        ping_timeout=settings.ping_timeout_seconds,
        logger=library_logger("socketio.server"),
        engineio_logger=library_logger("engineio.server"),
        json=OrjsonModule,
    )
    # Sessions entering this table become LeanSockets: fewer tasks per socket and per ping.
    sio.eio.sockets = SocketTable()
    sio.eio._async = {
        **sio.eio._async, "create_route": create_route, "translate_request": translate_request,
    }  # fmt: skip
    if not settings.websocket_compression:
        # python-engineio picks its websocket class from this table; ours turns deflate off.
        sio.eio._async = {**sio.eio._async, "websocket": UncompressedWebSocket}
        # Lets DeliveryMixin write a frame directly when the socket's writer is idle (fast.py).
        sio.eio.create_queue = lambda *args, **kwargs: WriterQueue(*args, **kwargs)
    return sio
