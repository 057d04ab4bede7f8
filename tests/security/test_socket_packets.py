"""Binary attachments and malformed packets: refused, logged as one line, and the sender closed."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

import pytest

from backend import keys
from backend.realtime.guard import LOG_BURST, LOG_RATE

from ..conftest import RunningServer
from .raw_socket import RawSocket

MakeServer = Callable[..., Awaitable[RunningServer]]

# Engine.IO `9`: no such packet type; `4`: an empty message; `47`: no such Socket.IO type;
# `44{}`: CONNECT_ERROR, which only a server sends; `4abc`: not a packet; `42{}`: an event that is
# not an array; `42[1]`: an event without a name; `431[]`: an ack the server never asked for.
MALFORMED = ["9", "4", "47", "44{}", "4abc", "42{}", "42[1]", "431[]"]


async def connected(server: RunningServer, user: str = "alice") -> RawSocket:
    sock = await RawSocket.open(server)
    answer = await sock.connect(server.token(user))
    assert answer.startswith("40"), answer
    return sock


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info is not None]


@pytest.mark.parametrize("frame", MALFORMED)
async def test_a_few_malformed_packets_close_the_session_with_one_line_each(
    server: RunningServer, caplog: pytest.LogCaptureFixture, frame: str
) -> None:
    limit = server.settings.max_malformed_packets
    sock = await connected(server)
    caplog.clear()
    for _ in range(limit - 1):
        await sock.ws.send_str(frame)
    # below the limit the session still works
    await sock.ws.send_str('421["heartbeat"]')
    answer = await sock.receive(5)
    assert isinstance(answer, str) and answer.startswith("431"), answer
    await sock.ws.send_str(frame)
    assert await sock.closed_within(5)
    assert not tracebacks(caplog)
    lines = [r for r in caplog.records if "malformed packet" in r.getMessage()]
    assert len(lines) == limit
    assert "closing the session" in lines[-1].getMessage()
    async with asyncio.timeout(5):
        while server.app[keys.CONNECTIONS].user_sessions("alice"):
            await asyncio.sleep(0.05)


async def test_malformed_packet_warnings_are_rate_limited(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    sessions = 20
    started = loop.time()
    socks = [await connected(server, f"user{i}") for i in range(sessions)]
    caplog.clear()
    for sock in socks:
        for _ in range(server.settings.max_malformed_packets):
            await sock.ws.send_str("4abc")
    closed = await asyncio.gather(*(sock.closed_within(5) for sock in socks))
    assert all(closed)
    elapsed = loop.time() - started
    warnings = [r for r in caplog.records if r.name == "backend.realtime.guard"]
    sent = sessions * server.settings.max_malformed_packets
    assert len(warnings) <= min(sent, LOG_BURST + LOG_RATE * elapsed + 1)
    assert not tracebacks(caplog)


async def test_an_event_before_connect_is_malformed(server: RunningServer) -> None:
    sock = await RawSocket.open(server)
    for _ in range(server.settings.max_malformed_packets):
        await sock.ws.send_str('42["heartbeat"]')
    assert await sock.closed_within(5)


async def test_a_binary_frame_closes_the_session(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    sock = await connected(server)
    await sock.ws.send_bytes(b"\x00" * 1024)
    assert await sock.closed_within(5)
    assert not tracebacks(caplog)


async def test_a_million_announced_attachments_are_refused_before_any_is_buffered(
    server: RunningServer,
) -> None:
    sock = await connected(server)
    await sock.ws.send_str('451000000-["message",{"_placeholder":true,"num":0}]')
    assert await sock.closed_within(5)
    # nothing is left waiting for attachments
    assert not server.app[keys.SIO]._binary_packet


async def test_a_bad_placeholder_does_not_wedge_the_session(server: RunningServer) -> None:
    sock = await connected(server)
    await sock.ws.send_str('451-["message",{"_placeholder":true,"num":7}]')
    assert await sock.closed_within(5)
    again = await connected(server)  # the user is not locked out
    await again.ws.send_str('421["heartbeat"]')
    answer = await again.receive(5)
    assert isinstance(answer, str) and answer.startswith("431")
    await again.close()


async def test_a_base64_binary_message_over_polling_closes_the_session(
    server: RunningServer,
) -> None:
    status, body = await poll(server, "GET", "")
    sid = json.loads(body[1:])["sid"]
    status, _ = await poll(
        server, "POST", sid, data="40" + json.dumps({"token": server.token("a")})
    )
    assert status == 200
    await poll(server, "POST", sid, data="bAAAA")
    sockets = server.app[keys.SIO].eio.sockets
    assert sid not in sockets or sockets[sid].closed


async def poll(
    server: RunningServer, method: str, sid: str, data: str | None = None
) -> tuple[int, str]:
    path = "/socket.io/?EIO=4&transport=polling" + (f"&sid={sid}" if sid else "")
    async with asyncio.timeout(10):
        async with server.http.request(method, server.url + path, data=data) as resp:
            return resp.status, await resp.text()
