"""What a client holds without finishing: sessions that never CONNECT, half-sent requests, and
long-polling bodies over the limit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from backend import keys
from backend.config import ConfigError, load_settings

from ..conftest import RunningServer
from .raw_socket import POLL_PATH, RawSocket

MakeServer = Callable[..., Awaitable[RunningServer]]


def open_sessions(server: RunningServer) -> int:
    return sum(1 for s in server.app[keys.SIO].eio.sockets.values() if not s.closed)


async def test_a_websocket_session_that_never_connects_is_closed(make_server: MakeServer) -> None:
    server = await make_server(connect_timeout_seconds=0.5)
    idle = await RawSocket.open(server)  # answers pings, never sends CONNECT
    member = await RawSocket.open(server)
    assert (await member.connect(server.token("alice"))).startswith("40")
    assert await idle.closed_within(5)
    assert open_sessions(server) == 1
    await member.ws.send_str('421["heartbeat"]')  # the connected one is untouched
    answer = await member.receive(5)
    assert isinstance(answer, str) and answer.startswith("431")
    await member.close()


async def test_a_refused_connect_does_not_keep_the_session(make_server: MakeServer) -> None:
    server = await make_server(connect_timeout_seconds=0.5)
    sock = await RawSocket.open(server)
    assert (await sock.connect("not-a-token")).startswith("44")
    assert await sock.closed_within(5)


async def test_a_session_that_leaves_every_namespace_is_closed(make_server: MakeServer) -> None:
    server = await make_server(connect_timeout_seconds=0.5)
    sock = await RawSocket.open(server)
    assert (await sock.connect(server.token("alice"))).startswith("40")
    await sock.ws.send_str("41")
    assert await sock.closed_within(5)


async def test_a_polling_session_that_never_connects_is_closed(make_server: MakeServer) -> None:
    # Long pings: only the connect timeout can end it in time.
    server = await make_server(
        connect_timeout_seconds=0.5, ping_interval_seconds=25, ping_timeout_seconds=20
    )
    async with server.http.get(server.url + POLL_PATH) as resp:
        sid = json.loads((await resp.text())[1:])["sid"]
    async with asyncio.timeout(5):
        while sid in server.app[keys.SIO].eio.sockets and not (
            server.app[keys.SIO].eio.sockets[sid].closed
        ):
            await asyncio.sleep(0.05)


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    async with asyncio.timeout(timeout):
        return await reader.read()  # up to EOF: the server closed the connection


async def test_half_sent_headers_are_cut_off(make_server: MakeServer) -> None:
    server = await make_server(request_header_timeout_seconds=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        await writer.drain()
        assert await read_until_closed(reader, 5) == b""
    finally:
        writer.close()


async def test_a_half_sent_body_is_answered_408_and_closed(make_server: MakeServer) -> None:
    server = await make_server(request_body_timeout_seconds=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    token = server.token("publisher", "notifications:publish")
    try:
        writer.write(
            b"POST /api/v1/notifications HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n"
            + f"Authorization: Bearer {token}\r\n\r\n".encode()
            + b'{"user_ids": ['
        )
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), head
        # the rest of the body is never read: the connection is not reused
        assert b"Connection: close" in head
    finally:
        writer.close()


async def open_polling_session(server: RunningServer) -> str:
    async with server.http.get(server.url + POLL_PATH) as resp:
        sid: str = json.loads((await resp.text())[1:])["sid"]
    body = "40" + json.dumps({"token": server.token("alice")})
    async with server.http.post(f"{server.url}{POLL_PATH}&sid={sid}", data=body) as resp:
        assert resp.status == 200
    return sid


async def test_a_polling_post_over_the_limit_is_answered_413_and_closes_the_session(
    make_server: MakeServer,
) -> None:
    server = await make_server(max_payload_bytes=1024)
    sid = await open_polling_session(server)
    limit = server.app[keys.SIO].eio.max_http_buffer_size
    async with asyncio.timeout(5):
        async with server.http.post(
            f"{server.url}{POLL_PATH}&sid={sid}", data=b"4" + b"x" * limit
        ) as resp:
            assert resp.status == 413
    sockets = server.app[keys.SIO].eio.sockets
    assert sid not in sockets or sockets[sid].closed
    async with asyncio.timeout(5):
        while server.app[keys.CONNECTIONS].user_sessions("alice"):
            await asyncio.sleep(0.05)


async def test_a_half_sent_polling_body_closes_the_session(make_server: MakeServer) -> None:
    server = await make_server(request_body_timeout_seconds=0.5)
    sid = await open_polling_session(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            f"POST {POLL_PATH}&sid={sid} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
            + b"Content-Type: text/plain\r\nContent-Length: 100\r\n\r\n42"
        )
        await writer.drain()
        async with asyncio.timeout(5):
            status_line = await reader.readline()
        assert status_line.startswith(b"HTTP/1.1 400"), status_line
    finally:
        writer.close()
    sockets = server.app[keys.SIO].eio.sockets
    assert sid not in sockets or sockets[sid].closed


@pytest.mark.parametrize("value", ["0.3", "2.5", "0"])
def test_a_ping_interval_clients_cannot_be_told_is_refused(tmp_path: Path, value: str) -> None:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"}
    with pytest.raises(ConfigError, match="PING_INTERVAL_SECONDS"):
        load_settings({**env, "PING_INTERVAL_SECONDS": value})
    assert load_settings({**env, "PING_INTERVAL_SECONDS": "3"}).ping_interval_seconds == 3


def test_the_deadlines_are_settings(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "CONNECT_TIMEOUT_SECONDS": "10",
        "REQUEST_HEADER_TIMEOUT_SECONDS": "5",
        "REQUEST_BODY_TIMEOUT_SECONDS": "7",
        "MAX_MALFORMED_PACKETS": "4",
    }
    settings = load_settings(env)
    assert settings.connect_timeout_seconds == 10
    assert settings.request_header_timeout_seconds == 5
    assert settings.request_body_timeout_seconds == 7
    assert settings.max_malformed_packets == 4
    with pytest.raises(ConfigError, match="CONNECT_TIMEOUT_SECONDS"):
        load_settings({**env, "CONNECT_TIMEOUT_SECONDS": "0"})
