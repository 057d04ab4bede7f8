"""Readiness says why it is not ready."""

from __future__ import annotations

from pathlib import Path

from .conftest import RunningServer, make_settings
from .servers import free_port


async def test_ready_is_503_with_a_reason_when_the_database_is_down(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none"
    server = RunningServer(make_settings(url, tmp_path, auto_migrate=False))
    await server.start()
    try:
        assert await server.request("GET", "/health/live") == (200, {"status": "ok"})
        status, ready = await server.request("GET", "/health/ready")
        assert status == 503
        assert ready["status"] == "unavailable"
        assert ready["checks"]["database"].startswith("unavailable:")
        status, body = await server.request("GET", "/api/v1/notifications", sub="alice")
        assert status == 503 and body["error"]["code"] == "unavailable"
    finally:
        await server.close()


async def test_metrics_are_prometheus_text_with_live_numbers(server: RunningServer) -> None:
    await server.connect("alice")
    await server.publish(["alice", "bob"])
    async with server.http.get(server.url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    assert "notify_connections 1.0" in text
    assert "notify_notifications_created_total 2.0" in text
    # alice's notification and unread_count went to her idle websocket in one direct write
    assert "notify_socket_direct_writes_total 1.0" in text
    assert 'notify_connections_by_transport{transport="websocket"} 1.0' in text
