"""`python -m backend` starting and stopping: a failed start is one line and exit 3; SIGTERM ends
the process within SHUTDOWN_GRACE_SECONDS whatever the clients hold, saying when it starts and
when it is done."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import socketio

from backend.cli import EXIT_CANNOT_START
from backend.config import Secret, Settings
from backend.security import SCOPE_PUBLISH, TokenVerifier

from ..conftest import TEST_SECRET
from ..processes import ROOT, ServerProcess, server_env, start_server
from ..servers import free_port

GRACE = 2.0
# Python start-up and the last log lines: the margin allowed beyond the grace.
MARGIN = 3.0


def _token(sub: str, *scopes: str) -> str:
    verifier = TokenVerifier(Settings(jwt_secret=Secret(TEST_SECRET)))
    return verifier.issue(sub, scopes=scopes)


def _assert_one_line_failure(server: ServerProcess, code: int, expected: str) -> None:
    assert code == EXIT_CANNOT_START, (server.stdout, server.stderr)
    output = server.stdout + server.stderr
    assert not any("Traceback" in line or " ERROR " in line for line in output), output
    failures = [line for line in server.stderr if line.startswith("cannot start:")]
    assert len(failures) == 1, server.stderr
    assert expected in failures[0]
    assert server.stderr[-1] == failures[0]


def test_an_unreachable_database_at_start_is_one_line_and_exit_3(tmp_path: Path) -> None:
    closed_port = free_port()  # nothing listens there
    env = server_env(
        tmp_path,
        free_port(),
        DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port}/notifications",
    )
    server = start_server(env)
    try:
        code = server.wait_exit(60)
        _assert_one_line_failure(server, code, "the database is unreachable")
    finally:
        server.stop()


def test_migrate_with_an_unreachable_database_is_one_line_and_exit_3(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/notifications"
    env = server_env(tmp_path, free_port(), DATABASE_URL=url)
    done = subprocess.run(
        [sys.executable, "-m", "backend", "migrate"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == EXIT_CANNOT_START, done.stderr
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("cannot migrate: the database is unreachable")


def test_a_port_in_use_is_one_line_and_exit_3(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = start_server(server_env(tmp_path, port))
        try:
            code = server.wait_exit(60)
            _assert_one_line_failure(server, code, f"cannot listen on 127.0.0.1:{port}")
        finally:
            server.stop()


def _slow_post(port: int, body: bytes, sent: int) -> socket.socket:
    """A publish whose headers and first `sent` bytes of body are on the wire; the rest later."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        "POST /api/v1/notifications HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {_token('publisher', SCOPE_PUBLISH)}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    connection.sendall(head.encode() + body[:sent])
    return connection


async def test_sigterm_exits_within_the_grace_while_clients_hold_a_slow_body_and_a_websocket(
    tmp_path: Path,
) -> None:
    port = free_port()
    server = start_server(server_env(tmp_path, port, SHUTDOWN_GRACE_SECONDS=str(GRACE)))
    client = socketio.AsyncClient(reconnection=False)
    try:
        await asyncio.to_thread(server.wait_listening)
        await client.connect(
            f"http://127.0.0.1:{port}",
            auth={"token": _token("alice")},
            transports=["websocket"],
            wait_timeout=10,
        )
        body = json.dumps({"user_ids": ["alice"], "type": "t", "title": "never finished"})
        held = _slow_post(port, body.encode(), sent=5)  # and never the rest
        await asyncio.sleep(0.3)  # the request is in its handler, reading the body

        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.wait_exit, GRACE + MARGIN)
        elapsed = time.monotonic() - started
        held.close()

        assert code == 0, server.stderr
        assert elapsed < GRACE + MARGIN
        shutting = [line for line in server.stdout if line.startswith("shutting down")]
        done = [line for line in server.stdout if line.startswith("shut down")]
        assert len(shutting) == 1 and len(done) == 1, server.stdout
        assert server.stdout.index(shutting[0]) < server.stdout.index(done[0])
        assert not any("Traceback" in line for line in server.stderr), server.stderr
    finally:
        if client.connected:
            await client.disconnect()
        server.stop()


async def test_a_request_in_flight_that_finishes_within_the_grace_is_answered(
    tmp_path: Path,
) -> None:
    port = free_port()
    server = start_server(server_env(tmp_path, port, SHUTDOWN_GRACE_SECONDS=str(GRACE)))
    try:
        await asyncio.to_thread(server.wait_listening)
        # Another writer holds SQLite's write lock: the publish waits in its handler for it.
        lock = sqlite3.connect(tmp_path / "notifications.db", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        body = json.dumps({"user_ids": ["alice"], "type": "t", "title": "finished in time"})
        held = _slow_post(port, body.encode(), sent=len(body))
        await asyncio.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        lock.execute("ROLLBACK")
        lock.close()
        answer = await asyncio.to_thread(held.recv, 65536)
        held.close()
        assert answer.startswith(b"HTTP/1.1 201"), answer[:200]
        assert await asyncio.to_thread(server.wait_exit, GRACE + MARGIN) == 0
    finally:
        server.stop()
