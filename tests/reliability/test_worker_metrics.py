"""`python -m backend worker` serves its own metrics on METRICS_PORT (behind METRICS_TOKEN when
set): the emails it settled and their send latency, scraped like a server process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from ..conftest import TEST_SECRET
from ..email_helpers import logs, one_email_queued
from ..servers import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "w" * 24


async def scrape(url: str, **headers: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status, await response.text()


async def test_the_worker_command_serves_its_metrics_on_metrics_port(tmp_path: Path) -> None:
    url, engine, sessionmaker = await one_email_queued(tmp_path)
    port = free_port()
    env = {
        **os.environ, "DATABASE_URL": url, "JWT_SECRET": TEST_SECRET, "LOG_FORMAT": "text",
        "EMAIL_OUTBOX_DIR": str(tmp_path / "mail"), "EMAIL_POLL_SECONDS": "0.1",
        "METRICS_PORT": str(port), "METRICS_TOKEN": TOKEN,
    }  # fmt: skip
    env.pop("SMTP_HOST", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "backend", "worker"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    metrics = f"http://127.0.0.1:{port}/metrics"
    try:
        async with asyncio.timeout(30):
            while (await logs(sessionmaker))[0].status != "sent":
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                await asyncio.sleep(0.1)
        assert (await scrape(metrics))[0] == 401
        status, text = await scrape(metrics, Authorization=f"Bearer {TOKEN}")
        assert status == 200
        assert 'notify_emails_total{status="sent"} 1.0' in text
        assert "notify_email_send_seconds_count 1.0" in text
        assert "notify_db_query_seconds_count" in text
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        await engine.dispose()
    assert process.returncode == 0, output
    assert "email worker stopped" in output
