"""Settings come from the environment, fail fast with one line, and keep a dev secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_embedded_default_generates_a_secret_once_and_keeps_it(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"}
    first = load_settings(env)
    second = load_settings(env)
    secret_file = tmp_path / "db.sqlite.jwt-secret"
    assert first.dev_mode and second.dev_mode
    assert first.jwt_secret == second.jwt_secret
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert first.host == "127.0.0.1" and first.port == 8080


def test_a_configured_secret_turns_dev_mode_off(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "JWT_SECRET": "x" * 40,
        "PORT": "9000",
        "CORS_ALLOWED_ORIGINS": "https://app.example.com, https://admin.example.com",
    }
    settings = load_settings(env)
    assert not settings.dev_mode
    assert settings.port == 9000
    assert settings.cors_allowed_origins == ("https://app.example.com", "https://admin.example.com")
    assert "x" * 40 not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "PORT must be an integer"),
        ({"PORT": "70000"}, "PORT must be between"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL must start with"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of"),
        ({"JWT_SECRET": "changethis"}, "placeholder"),
        ({"JWT_SECRET": "short"}, "at least 32"),
        ({"JWT_SECRET": "x" * 40, "JWT_ALGORITHMS": "none"}, "JWT_ALGORITHMS must be"),
        ({"JWT_ALGORITHMS": "RS256", "JWT_SECRET": "x" * 40}, "JWT_PUBLIC_KEY is required"),
        (
            {"DATABASE_URL": "postgresql+asyncpg://u@127.0.0.1/db"},
            "JWT_SECRET or JWT_PUBLIC_KEY is required",
        ),
        ({"JWT_SECRET": "x" * 40, "REDIS_URL": "http://x"}, "REDIS_URL must start with"),
        (
            {"JWT_SECRET": "x" * 40, "REDIS_URL": "redis+sentinel://127.0.0.1:26379/0"},
            "REDIS_URL must name the Sentinel service",
        ),
        (
            {"JWT_SECRET": "x" * 40, "REDIS_URL": "redis+sentinel://:hunter2@127.0.0.1/0/main"},
            r"REDIS_URL must be redis\+sentinel://.*got 'redis\+sentinel://:\*\*\*@127",
        ),
        ({"JWT_SECRET": "x" * 40, "CORS_ALLOWED_ORIGINS": "evil"}, "invalid origin"),
        ({"JWT_SECRET": "x" * 40, "SSE_HEARTBEAT_SECONDS": "0"}, "must be positive"),
        (
            {"JWT_SECRET": "x" * 40, "SSE_HEARTBEAT_SECONDS": "300"},
            "SSE_HEARTBEAT_SECONDS must be less than STALE_TIMEOUT_SECONDS",
        ),
        (
            {"JWT_SECRET": "x" * 40, "SSE_MAX_STREAMS_PER_USER": "0"},
            "SSE_MAX_STREAMS_PER_USER must be at least 1, got 0",
        ),
        ({"JWT_SECRET": "x" * 40, "SSE_TICKET_TTL_SECONDS": "-1"}, "must be positive"),
        (
            {"JWT_SECRET": "x" * 40, "SSE_MAX_QUEUED_EVENTS": "10"},
            "SSE_MAX_QUEUED_EVENTS must be at least RECOVERY_PAGE_SIZE",
        ),
        ({"JWT_SECRET": "x" * 40, "CLUSTER_TTL_SECONDS": "0"}, "CLUSTER_TTL_SECONDS must be"),
        (
            {"JWT_SECRET": "x" * 40, "RECEIPT_MAX_SEQS": "1001"},
            "RECEIPT_MAX_SEQS must be between 1 and 1000",
        ),
        (
            {"JWT_SECRET": "x" * 40, "ACTIVITY_QUEUE_MAX": "0"},
            "ACTIVITY_QUEUE_MAX must be at least 1, got 0",
        ),
        (
            {"JWT_SECRET": "x" * 40, "ACTIVITY_FLUSH_SECONDS": "0"},
            "ACTIVITY_FLUSH_SECONDS must be positive",
        ),
    ],
)
def test_bad_values_are_refused_with_a_clear_reason(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    env.setdefault("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_a_redis_url_may_name_sentinels_as_python_socketio_reads_it(tmp_path: Path) -> None:
    url = "redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/2/notifications"
    env = {"JWT_SECRET": "x" * 40, "REDIS_URL": url}
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    assert load_settings(env).redis_url == url


def test_a_bad_value_stops_start_up_with_one_line_not_a_traceback(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PORT": "not-a-port",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/d.db",
    }
    result = subprocess.run(
        [sys.executable, "-m", "backend"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == "configuration error: PORT must be an integer, got 'not-a-port'"
