"""A websocket held on /socket.io/ is one request for its whole life: it keeps its request id on
every line and in its answer, and is counted when it is answered, not when it ends."""

from __future__ import annotations

import asyncio
import logging
import re

import aiohttp
import socketio

from backend.logs import ContextFilter

from ..conftest import RunningServer

UPGRADE_101 = re.compile(
    r'^notify_http_requests_total\{method="GET",route="/socket.io/",status="101"\} (\S+)$', re.M
)
REFUSED_400 = re.compile(
    r'^notify_http_requests_total\{method="GET",route="/socket.io/",status="400"\} (\S+)$', re.M
)


async def metrics_text(server: RunningServer) -> str:
    async with server.http.get(server.url + "/metrics") as response:
        assert response.status == 200
        return await response.text()


def counted(pattern: re.Pattern[str], text: str) -> float:
    match = pattern.search(text)
    return float(match.group(1)) if match else 0.0


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(ContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_held_websocket_is_counted_when_answered_and_keeps_its_request_id(
    server: RunningServer,
) -> None:
    lines = Lines()
    logger = logging.getLogger("routers.socket_events")
    level = logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.DEBUG)
    try:
        before = counted(UPGRADE_101, await metrics_text(server))
        client = socketio.AsyncClient(reconnection=False)
        server.clients.append(client)
        await client.connect(
            server.url,
            auth={"token": server.token("carol")},
            headers={"X-Request-ID": "ws-trace-7"},
            transports=["websocket"],
            wait_timeout=10,
        )
        # Counted while the socket is still open (its 101 answered), once.
        assert counted(UPGRADE_101, await metrics_text(server)) == before + 1
        await client.disconnect()
        async with asyncio.timeout(10):
            while not any(r.getMessage().startswith("disconnected") for r in lines.records):
                await asyncio.sleep(0.02)
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    [gone] = [r for r in lines.records if r.getMessage().startswith("disconnected")]
    assert (gone.request_id, gone.user_id) == ("ws-trace-7", "carol")  # type: ignore[attr-defined]
    assert counted(UPGRADE_101, await metrics_text(server)) == before + 1


async def test_a_refused_websocket_upgrade_is_counted_with_its_status_and_request_id(
    server: RunningServer,
) -> None:
    before = counted(REFUSED_400, await metrics_text(server))
    url = server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket&sid=nobody"
    async with aiohttp.ClientSession() as http:
        try:
            await http.ws_connect(url, headers={"X-Request-ID": "ws-refused-1"})
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 400
            assert exc.headers is not None and exc.headers["X-Request-ID"] == "ws-refused-1"
        else:
            raise AssertionError("an upgrade for an unknown session was accepted")
    assert counted(REFUSED_400, await metrics_text(server)) == before + 1
