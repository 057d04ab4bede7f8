"""What an anonymous client can make the server log: at most one line per bad request, never a
traceback; and Engine.IO's own refusals reach a cross-origin browser as Engine.IO wrote them."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import aiohttp

from ..conftest import RunningServer
from ..processes import ServerProcess, server_env, start_server
from ..servers import free_port

APP_ORIGIN = "http://app.example"


def _raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        return answer


def _wait_for_line(server: ServerProcess, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for line in server.stderr):
            return
        time.sleep(0.05)


async def test_an_oversized_header_is_one_log_line_without_a_traceback(tmp_path: Path) -> None:
    port = free_port()
    server = start_server(server_env(tmp_path, port))
    try:
        await asyncio.to_thread(server.wait_listening)
        before = len(server.stderr)
        request = (
            b"GET /api/v1/notifications HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: "
            + b"a" * 100_000
            + b"\r\nConnection: close\r\n\r\n"
        )
        answer = await asyncio.to_thread(_raw_request, port, request)
        assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer
        await asyncio.to_thread(_wait_for_line, server, "bad request from")
        # A normal request after it: its log lines (its access line) mark the end of the bad one's.
        await asyncio.to_thread(
            _raw_request, port, b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        await asyncio.sleep(0.3)
        logged = [line for line in server.stderr[before:] if "backend.access" not in line]
        assert len(logged) == 1, logged
        assert "bad request from 127.0.0.1" in logged[0]
        assert " INFO " in logged[0]
    finally:
        server.stop()


async def test_an_engineio_error_is_logged_once(tmp_path: Path) -> None:
    port = free_port()
    server = start_server(server_env(tmp_path, port))
    try:
        await asyncio.to_thread(server.wait_listening)
        before = len(server.stderr)
        request = (
            b"GET /socket.io/?EIO=3&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Connection: close\r\n\r\n"
        )
        answer = await asyncio.to_thread(_raw_request, port, request)
        assert b" 400 " in answer.split(b"\r\n", 1)[0]
        await asyncio.to_thread(_wait_for_line, server, "unsupported version")
        await asyncio.sleep(0.3)
        logged = [line for line in server.stderr[before:] if "unsupported version" in line]
        assert len(logged) == 1, server.stderr[before:]
    finally:
        server.stop()


async def test_an_engineio_refusal_keeps_its_cors_headers_and_its_message(
    tmp_path: Path,
) -> None:
    from ..conftest import make_settings

    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'test.db'}",
        tmp_path,
        cors_allowed_origins=(APP_ORIGIN,),
    )
    server = RunningServer(settings)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"{server.url}/socket.io/",
                params={"EIO": "3", "transport": "polling"},
                headers={"Origin": APP_ORIGIN},
            ) as resp:
                text = await resp.text()
                assert resp.status == 400
                assert resp.headers.get("Access-Control-Allow-Origin") == APP_ORIGIN
                assert "unsupported version" in text
    finally:
        await server.close()
