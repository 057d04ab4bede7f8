"""`python -m backend worker`: the queue drained by a process of its own, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from .conftest import TEST_SECRET
from .email_helpers import logs, one_email_queued

ROOT = Path(__file__).resolve().parent.parent


async def test_worker_command_sends_from_the_outbox_and_stops_on_sigterm(tmp_path: Path) -> None:
    url, engine, sessionmaker = await one_email_queued(tmp_path)

    outbox = tmp_path / "mail"
    env = {
        **os.environ, "DATABASE_URL": url, "JWT_SECRET": TEST_SECRET,
        "EMAIL_OUTBOX_DIR": str(outbox), "EMAIL_POLL_SECONDS": "0.1",
    }  # fmt: skip
    env.pop("SMTP_HOST", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "backend", "worker"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        async with asyncio.timeout(30):
            while not list(outbox.glob("*.eml")):
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                await asyncio.sleep(0.1)
            while (await logs(sessionmaker))[0].status != "sent":
                await asyncio.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        await engine.dispose()
    assert process.returncode == 0, output
    assert f"email worker running (outbox {outbox})" in output
    assert "email worker stopped" in output
    [eml] = outbox.glob("*.eml")
    assert "Subject: Hi" in eml.read_text()
