"""Several server processes over Redis: every process reaches every client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from backend.security import SCOPE_ADMIN

from .conftest import RunningServer
from .servers import RedisServer

MakeServer = Callable[..., Awaitable[RunningServer]]


async def test_a_notification_published_on_one_server_reaches_clients_on_another(
    make_server: MakeServer, redis_server: RedisServer
) -> None:
    a = await make_server(redis_url=redis_server.url)
    b = await make_server(redis_url=redis_server.url)
    on_a = await a.connect("alice")
    on_b = await b.connect("alice")
    await asyncio.sleep(0.3)  # both managers subscribed to the channel
    [created] = await a.publish(["alice"])
    for client in (on_a, on_b):
        [got] = await client.wait_for("notification")
        assert got == created
        assert len(client.of("notification")) == 1
    await b.request("POST", f"/api/v1/notifications/{created['id']}/read", sub="alice")
    await on_a.wait_for("notifications_read")
    status, ready = await a.request("GET", "/health/ready")
    assert status == 200 and ready["checks"] == {"database": "ok", "redis": "ok", "bus": "ok"}
    status, stats = await a.request(
        "GET", "/api/v1/notifications/websocket/stats", sub="root", scopes=(SCOPE_ADMIN,)
    )
    assert status == 200
    assert len(stats["processes"]) == 2
    assert stats["connections"] == 2 and stats["rooms"] == {"user:alice": 2}


async def test_ready_is_503_with_a_reason_when_redis_is_down(
    make_server: MakeServer,
) -> None:
    from .servers import free_port

    server = await make_server(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    status, ready = await server.request("GET", "/health/ready")
    assert status == 503
    assert ready["status"] == "unavailable"
    assert ready["checks"]["database"] == "ok"
    assert ready["checks"]["redis"].startswith("unavailable:")
