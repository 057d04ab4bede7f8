"""The python-socketio AsyncServer, configured from Settings."""

from __future__ import annotations

import socketio

from ..config import Settings


def create_socket_server(settings: Settings) -> socketio.AsyncServer:
    """AsyncRedisManager when REDIS_URL is set, so every process reaches every client."""
    manager: socketio.AsyncManager | None = None
    if settings.redis_url:
        manager = socketio.AsyncRedisManager(settings.redis_url)
    # None = same origin only; an empty list would switch the origin check off altogether.
    origins: str | list[str] | None = list(settings.cors_allowed_origins) or None
    if "*" in settings.cors_allowed_origins:
        origins = "*"
    return socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        cors_allowed_origins=origins,
        max_http_buffer_size=settings.max_payload_bytes,
        ping_interval=25,
        ping_timeout=20,
        logger=False,
        engineio_logger=False,
    )
