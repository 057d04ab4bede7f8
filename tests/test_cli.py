"""The README's run command: `python -m backend` on the embedded default, and `token`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import socketio

from .servers import free_port

ROOT = Path(__file__).resolve().parent.parent


async def test_python_m_backend_serves_sqlite_migrated_and_prints_how_to_get_a_token(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'notifications.db'}",
        "PORT": str(port),
    }
    env.pop("JWT_SECRET", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "backend"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline(), process.stdout.readline()]
        while not any("listening" in line for line in banner) and len(banner) < 50:
            banner.append(process.stdout.readline())
        banner.append(process.stdout.readline())
        assert f"listening on http://127.0.0.1:{port}" in "".join(banner)
        assert "python -m backend token --sub alice" in "".join(banner)
        token = subprocess.run(
            [sys.executable, "-m", "backend", "token", "--sub", "alice", "--scope",
             "notifications:publish"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=60,
        ).stdout.strip()  # fmt: skip
        client = socketio.AsyncClient(reconnection=False)
        received: list[dict[str, object]] = []
        client.on("notification", received.append)
        await client.connect(f"http://127.0.0.1:{port}", auth={"token": token}, wait_timeout=5)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/health/ready") as resp:
                assert resp.status == 200
            async with http.post(
                f"http://127.0.0.1:{port}/api/v1/notifications",
                json={"user_ids": ["alice"], "type": "hello", "title": "It works"},
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                assert resp.status == 201
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.05)
        await client.disconnect()
        assert received and received[0]["title"] == "It works"
        assert (tmp_path / "notifications.db").exists()
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_token_from_another_folder_refuses_instead_of_minting_for_a_new_secret(
    tmp_path: Path,
) -> None:
    """Run where no server ever started, `token` says where it looked; it makes no secret."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("JWT_SECRET", "JWT_PUBLIC_KEY", "DATABASE_URL"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "backend", "token", "--sub", "alice"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    secret_file = tmp_path / "data" / "notifications.db.jwt-secret"
    assert f"no server secret at {secret_file}" in result.stderr
    assert "python -m backend" in result.stderr
    assert not secret_file.exists()
