"""REST log lines name the authenticated caller (user_id: a token's sub, or key:<id> for an API
key), the access line included, and still carry no credential."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from backend.config import load_settings
from backend.security import TokenVerifier

from ..processes import server_env, start_server
from ..servers import free_port


async def test_access_lines_carry_the_callers_user_id_and_no_credential(tmp_path: Path) -> None:
    port = free_port()
    env = server_env(tmp_path, port, LOG_FORMAT="json")
    verifier = TokenVerifier(load_settings({"JWT_SECRET": env["JWT_SECRET"]}))
    token = verifier.issue("alice", scopes=("notifications:publish",))
    admin = verifier.issue("ops", scopes=("notifications:admin",))
    server = start_server(env)
    try:
        await asyncio.to_thread(server.wait_listening)
        base = f"http://127.0.0.1:{port}"
        # one connection: the requests share a keep-alive connection, so a caller left behind
        # by one request would show on the next
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as http:
            headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "as-alice"}
            async with http.get(base + "/api/v1/notifications", headers=headers) as response:
                assert response.status == 200
            headers = {"Authorization": f"Bearer {admin}", "X-Request-ID": "make-key"}
            body = {"name": "billing", "permissions": {"any_user": True}}
            async with http.post(base + "/api/v1/admin/api-keys", json=body,
                                 headers=headers) as response:  # fmt: skip
                assert response.status == 201
                created = await response.json()
            api_key, key_id = created["key"], created["id"]
            headers = {"X-API-Key": api_key, "X-Request-ID": "as-key"}
            notify = {"user_ids": ["bob"], "type": "invoice.paid", "title": "Paid"}
            async with http.post(base + "/api/v1/notifications", json=notify,
                                 headers=headers) as response:  # fmt: skip
                assert response.status == 201
            async with http.get(base + "/health/live", headers={"X-Request-ID": "anon"}) as r:
                assert r.status == 200
            bad = {"Authorization": "Bearer not-a-token", "X-Request-ID": "refused"}
            async with http.get(base + "/api/v1/notifications", headers=bad) as response:
                assert response.status == 401
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any('"refused"' in s for s in server.stderr):
            await asyncio.sleep(0.05)
    finally:
        server.stop()
    lines: list[dict[str, Any]] = [json.loads(line) for line in server.stderr]
    access = {line["request_id"]: line for line in lines if line["logger"] == "backend.access"}
    assert access["as-alice"]["user_id"] == "alice"
    assert access["make-key"]["user_id"] == "ops"
    assert access["as-key"]["user_id"] == f"key:{key_id}"
    assert "user_id" not in access["anon"]
    assert "user_id" not in access["refused"]
    text = "\n".join(server.stderr)
    for secret in (token, admin, api_key, token.split(".")[2]):
        assert secret not in text
