"""/metrics is not public by default; logs are JSON off a terminal and carry no credential."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from backend.config import ConfigError, load_settings
from backend.security import TokenVerifier

from ..conftest import RunningServer, make_settings
from ..processes import server_env, start_server
from ..servers import free_port

METRICS_TOKEN = "m" * 24


async def status_of(url: str, **headers: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status


async def test_metrics_answer_only_local_unproxied_peers_by_default(server: RunningServer) -> None:
    assert await status_of(server.url + "/metrics") == 200
    # through a proxy on the same host (nginx adds these), the peer is not local
    assert await status_of(server.url + "/metrics", **{"X-Forwarded-For": "203.0.113.9"}) == 404
    assert await status_of(server.url + "/metrics", **{"X-Real-IP": "203.0.113.9"}) == 404


async def test_metrics_token_is_required_when_set(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, metrics_token=load_settings(
        {"METRICS_TOKEN": METRICS_TOKEN, "JWT_SECRET": "s" * 32}).metrics_token)  # fmt: skip
    server = RunningServer(settings)
    await server.start()
    try:
        url = server.url + "/metrics"
        assert await status_of(url) == 401
        assert await status_of(url, Authorization="Bearer " + "x" * 24) == 401
        assert await status_of(url, Authorization=f"Bearer {METRICS_TOKEN}") == 200
        forwarded = {"Authorization": f"Bearer {METRICS_TOKEN}", "X-Forwarded-For": "203.0.113.9"}
        assert await status_of(url, **forwarded) == 200  # the token is enough from anywhere
    finally:
        await server.close()


async def test_metrics_port_serves_metrics_and_the_main_listener_does_not(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    server = RunningServer(make_settings(database_url, tmp_path, metrics_port=port))
    await server.start()
    try:
        assert await status_of(server.url + "/metrics") == 404
        assert await status_of(f"http://127.0.0.1:{port}/metrics") == 200
        assert await status_of(f"http://127.0.0.1:{port}/api/v1/notifications") == 404
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"METRICS_TOKEN": "short"}, "METRICS_TOKEN must be at least 16 characters"),
        ({"METRICS_PORT": "8080"}, "METRICS_PORT must differ from PORT"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be json, text or auto, got 'xml'"),
        ({"METRICS_MAX_TYPES": "0"}, "METRICS_MAX_TYPES must be between 1 and 1000, got 0"),
    ],
)
def test_bad_observability_settings_are_one_line_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"JWT_SECRET": "s" * 32, **env})
    assert message in str(raised.value)


def _raw(port: int, request: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        while connection.recv(65536):
            pass


async def test_logs_are_json_lines_with_request_ids_and_no_credentials(tmp_path: Path) -> None:
    port = free_port()
    env = server_env(tmp_path, port, LOG_LEVEL="DEBUG")
    del env["LOG_FORMAT"]  # the default: stderr is a pipe, so JSON
    verifier = TokenVerifier(load_settings({"JWT_SECRET": env["JWT_SECRET"]}))
    token = verifier.issue("alice", scopes=("notifications:publish",))
    api_key = "nsk_live_" + "k" * 32
    server = start_server(env)
    try:
        await asyncio.to_thread(server.wait_listening)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "trace-42"}
            async with http.get(base + "/api/v1/notifications", headers=headers) as response:
                assert response.status == 200
                assert response.headers["X-Request-ID"] == "trace-42"
            hostile = {"X-Request-ID": "x" * 500, "X-API-Key": api_key}
            async with http.get(base + f"/api/v1/unsubscribe?token={token}", headers=hostile) as r:
                generated = r.headers["X-Request-ID"]
                assert len(generated) == 32 and generated != "x" * 500
        client = socketio.AsyncClient()
        await client.connect(base, auth={"token": token}, transports=["websocket"])
        await client.disconnect()
        # a request aiohttp cannot parse, with credentials in the lines it quotes
        await asyncio.to_thread(
            _raw, port, f"GET /x?ticket={api_key} HTTP/1.1\r\nX-API-Key {api_key}\r\n"
            f"Authorization Bearer {token}\r\n\r\n".encode(),
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("disconnected" in s for s in server.stderr):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
    finally:
        server.stop()
    lines: list[dict[str, Any]] = [json.loads(line) for line in server.stderr]  # each one JSON
    text = "\n".join(server.stderr)
    assert token not in text and token.split(".")[2] not in text
    assert api_key not in text
    access = [line for line in lines if line["logger"] == "backend.access"]
    [traced] = [line for line in access if line.get("request_id") == "trace-42"]
    assert (traced["method"], traced["route"], traced["status"]) == (
        "GET", "/api/v1/notifications", 200,
    )  # fmt: skip
    assert isinstance(traced["duration_ms"], float)
    assert any(line.get("request_id") == generated for line in access)
    [gone] = [line for line in lines if line["msg"].startswith("disconnected")]
    assert gone["user_id"] == "alice" and gone["sid"] in gone["msg"]
    assert any(line["logger"] == "aiohttp.server" for line in lines), text
