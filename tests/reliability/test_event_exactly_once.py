"""Dapr delivers at least once: the same CloudEvent posted concurrently to two server processes
on one PostgreSQL gives one notification, and the other delivery is answered as a duplicate."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from backend.config import Secret, Settings
from backend.security import TokenVerifier

from ..conftest import TEST_SECRET, create_pg_database
from ..processes import ServerProcess, server_env, start_server
from ..servers import PostgresServer, free_port
from ..test_events import DAPR_TOKEN, task_event

EVENTS = 20  # distinct events, each delivered to both processes at once


@pytest.fixture
async def two_processes(pg_server: PostgresServer, tmp_path: Path) -> Iterator[tuple[str, str]]:
    url = await create_pg_database(pg_server)
    started: list[ServerProcess] = []
    urls: list[str] = []
    try:
        for _ in range(2):  # one after the other: the first one migrates
            port = free_port()
            env = server_env(
                tmp_path, port, DATABASE_URL=url, DAPR_API_TOKEN=DAPR_TOKEN, LOG_LEVEL="WARNING"
            )
            process = start_server(env)
            started.append(process)
            await asyncio.to_thread(process.wait_listening)
            urls.append(f"http://127.0.0.1:{port}")
        yield urls[0], urls[1]
    finally:
        for process in started:
            process.stop()


async def test_the_same_event_posted_concurrently_to_two_processes_gives_one_notification(
    two_processes: tuple[str, str],
) -> None:
    headers = {"Content-Type": "application/cloudevents+json", "dapr-api-token": DAPR_TOKEN}
    answers: Counter[str] = Counter()
    async with aiohttp.ClientSession() as http:

        async def deliver(url: str, number: int) -> None:
            body = json.dumps(task_event(f"race-{number}", title=f"task {number}")).encode()
            async with http.post(url + "/api/v1/events", data=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                answer = await resp.json()
                kind = "duplicate" if answer.get("duplicate") else answer["status"]
                answers[kind] += 1

        await asyncio.gather(
            *(deliver(url, number) for number in range(EVENTS) for url in two_processes)
        )
        assert answers == {"SUCCESS": EVENTS, "duplicate": EVENTS}
        token = TokenVerifier(Settings(jwt_secret=Secret(TEST_SECRET))).issue("alice")
        async with http.get(
            two_processes[1] + "/api/v1/notifications",
            params={"limit": "100"},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            page = await resp.json()
    titles = sorted(n["title"] for n in page["notifications"])
    assert titles == sorted(f"New task: task {number}" for number in range(EVENTS))
