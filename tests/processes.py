"""`python -m backend` as a real process: started with an environment, its output collected."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .conftest import TEST_SECRET

ROOT = Path(__file__).resolve().parent.parent


def server_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    """SQLite in the test's directory, a known secret, the given port; `extra` wins."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'notifications.db'}",
        "PORT": str(port),
        "JWT_SECRET": TEST_SECRET,
        "EMAIL_OUTBOX_DIR": str(tmp_path / "outbox"),
        "PYTHONUNBUFFERED": "1",
        # readable lines, as on a terminal (the tests grep them); JSON is tested on its own
        "LOG_FORMAT": "text",
    }
    env.update(extra)
    return env


@dataclass
class ServerProcess:
    """A running `python -m backend`; stdout and stderr are read into lists as they come."""

    process: subprocess.Popen[str]
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def _pump(self) -> None:
        def read(stream: object, into: list[str]) -> None:
            for line in stream:  # type: ignore[attr-defined]
                into.append(line.rstrip("\n"))

        assert self.process.stdout is not None and self.process.stderr is not None
        for stream, into in (
            (self.process.stdout, self.stdout),
            (self.process.stderr, self.stderr),
        ):
            threading.Thread(target=read, args=(stream, into), daemon=True).start()

    def wait_listening(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any("listening on" in line for line in self.stdout):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"not listening: {self.stdout} {self.stderr}")

    def wait_exit(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        time.sleep(0.2)  # let the readers take the last lines
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=20)


def start_server(env: dict[str, str]) -> ServerProcess:
    process = subprocess.Popen(
        [sys.executable, "-m", "backend"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    server = ServerProcess(process)
    server._pump()
    return server
