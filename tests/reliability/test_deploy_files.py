"""The deploy files match the server: the dashboard's metrics exist, the env example loads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from backend.config import load_settings

from ..servers import RedisServer

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def names_in(expr: str) -> set[str]:
    names = set(re.findall(r"\b(notify_[a-z_]+)", expr))
    for suffix in SUFFIXES:
        names = {n.removesuffix(suffix) for n in names}
    return names


async def test_every_metric_the_dashboard_queries_is_exported(
    make_server: Any, redis_server: RedisServer
) -> None:
    server = await make_server(redis_url=redis_server.url)
    async with server.http.get(server.url + "/metrics") as response:
        text = await response.text()
    exported = {family.name for family in text_string_to_metric_families(text)}
    dashboard = json.loads((DEPLOY / "grafana" / "notification-server.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in names_in(target["expr"])
    }
    assert len(queried) >= 15
    assert queried <= exported, sorted(queried - exported)


def test_the_example_environment_file_is_a_valid_configuration() -> None:
    env: dict[str, str] = {}
    for line in (DEPLOY / "notification-server.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    env["JWT_SECRET"] = "x" * 8 + "-an-operator-chose-this-secret-1234"
    env["SMTP_PASSWORD"] = "app-password"
    settings = load_settings(env)
    assert settings.metrics_port == 9108 and settings.log_format == "json"
    unit = (DEPLOY / "systemd" / "notification-server.service").read_text()
    assert "ExecStart=" in unit and "-m backend serve" in unit
    assert "EnvironmentFile=/etc/notification-server/env" in unit
