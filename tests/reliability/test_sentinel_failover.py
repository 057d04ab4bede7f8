"""Redis through Sentinel: two `python -m backend` processes on one `redis+sentinel://` REDIS_URL,
clients on both, POSTs continuing through a primary failover (`SENTINEL FAILOVER`): every POST
is stored, readiness follows the new primary, cross-process delivery resumes, and every client
ends with every notification once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from backend.config import Secret, Settings
from backend.security import SCOPE_PUBLISH, TokenVerifier

from ..conftest import TEST_SECRET, Recorder, create_pg_database
from ..processes import ServerProcess, server_env, start_server
from ..servers import PostgresServer, SentinelGroup, free_port, start_sentinel_group
from .test_client_pattern import load_example, wait_until

USERS = ("ann", "bob", "cyd")
# Bounds of the publishing loop: it stops at whichever comes first, or when told to.
MAX_POSTS = 600
MAX_SECONDS = 60.0
PACE_SECONDS = 0.1

verifier = TokenVerifier(Settings(jwt_secret=Secret(TEST_SECRET)))


def token(sub: str, *scopes: str) -> str:
    return verifier.issue(sub, scopes=scopes)


@pytest.fixture
def sentinels() -> Iterator[SentinelGroup]:
    group = start_sentinel_group(sentinels=2)
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture
async def two_processes(
    sentinels: SentinelGroup, pg_server: PostgresServer, tmp_path: Path
) -> AsyncIterator[list[str]]:
    """Two server processes on one PostgreSQL database and the sentinels' REDIS_URL."""
    database_url = await create_pg_database(pg_server)
    started: list[ServerProcess] = []
    urls = []
    try:
        for _ in range(2):  # one after the other: the first one migrates the database
            port = free_port()
            env = server_env(
                tmp_path, port, DATABASE_URL=database_url, REDIS_URL=sentinels.url,
                OUTBOUND_RATE_PER_SECOND="1000",
            )  # fmt: skip
            process = start_server(env)
            started.append(process)
            process.wait_listening()
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for process in started:
            process.stop()


async def ready(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url + "/health/ready") as response:
        return response.status, await response.json()


async def wait_ready(http: aiohttp.ClientSession, url: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    answer: Any = None
    while time.monotonic() < deadline:
        status, answer = await ready(http, url)
        if status == 200:
            return answer
        await asyncio.sleep(0.2)
    raise AssertionError(f"{url} not ready after the failover: {answer}")


async def test_delivery_resumes_after_a_sentinel_failover_under_traffic_and_nothing_is_lost(
    sentinels: SentinelGroup, two_processes: list[str]
) -> None:
    a, b = two_processes
    publisher = {"Authorization": f"Bearer {token('publisher', SCOPE_PUBLISH)}"}
    example = load_example()
    got: dict[tuple[str, str], list[dict[str, Any]]] = {}
    clients = []
    plain: dict[tuple[str, str], Recorder] = {}
    async with aiohttp.ClientSession() as http:
        for url in (a, b):
            assert await ready(http, url) == (
                200, {"status": "ok", "checks": {"database": "ok", "redis": "ok", "bus": "ok"}}
            )  # fmt: skip
            for user in USERS:
                # The documented client (syncs on a seq gap) and a plain one that never syncs.
                into = got.setdefault((url, user), [])
                client = example.NotificationClient(
                    url, token(user), on_notification=into.append, last_seq=0
                )
                await client.connect()
                clients.append(client)
                recorder = plain[(url, user)] = Recorder()
                await recorder.client.connect(
                    url, auth={"token": token(user)}, transports=["websocket"], wait_timeout=10
                )
        await asyncio.sleep(0.5)  # both managers subscribed

        answers: list[int] = []
        stop = asyncio.Event()

        async def post(url: str, title: str) -> None:
            body = {"user_ids": list(USERS), "type": "test", "title": title}
            async with http.post(url + "/api/v1/notifications", json=body, headers=publisher) as r:
                answers.append(r.status)

        async def publish_until_stopped() -> None:
            started = time.monotonic()
            for i in range(MAX_POSTS):
                if stop.is_set() or time.monotonic() - started > MAX_SECONDS:
                    return
                await post((a, b)[i % 2], f"traffic {i}")
                await asyncio.sleep(PACE_SECONDS)

        traffic = asyncio.create_task(publish_until_stopped())
        await asyncio.sleep(1.0)
        old_primary = sentinels.primary_port()
        new_primary = await asyncio.to_thread(sentinels.failover)
        assert new_primary != old_primary
        await asyncio.sleep(2.0)  # traffic goes on through the new primary
        stop.set()
        await traffic
        assert set(answers) == {201}, "every POST is stored and answered through the failover"

        # Our own Redis client (readiness, cluster stats) follows the sentinels to the new
        # primary: with Redis.from_url on this URL it could not even start.
        for url in (a, b):
            assert (await wait_ready(http, url))["checks"]["redis"] == "ok"

        # Cross-process delivery resumes: a marker published on each process reaches the
        # plain clients on the other one live (bounded retries while the subscriber reconnects).
        for source, target in ((a, b), (b, a)):
            recorder = plain[(target, "ann")]
            for attempt in range(40):
                before = len(recorder.of("notification"))
                await post(source, f"marker {source} {attempt}")
                await asyncio.sleep(0.5)
                if any(
                    n["title"] == f"marker {source} {attempt}"
                    for n in recorder.of("notification")[before:]
                ):
                    break
            else:
                raise AssertionError(f"no delivery from {source} to {target} after the failover")

        # Once resumed, everything published reaches every client live.
        for url in (a, b):
            await post(url, f"final {url}")
        for recorder in plain.values():
            await wait_until(
                lambda r=recorder: (
                    {f"final {url}" for url in (a, b)} <= {n["title"] for n in r.of("notification")}
                )
            )

        # Nothing lost: every notification is in the database (a 201 answered it), and each
        # client of the documented pattern ends with every one of its user's, once.
        posts = answers.count(201)
        expected = list(range(1, posts + 1))  # every POST went to every user, seqs from 1
        for user in USERS:
            headers = {"Authorization": f"Bearer {token(user)}"}
            url = a + "/api/v1/notifications/unread-count"
            async with http.get(url, headers=headers) as response:
                assert (await response.json())["count"] == posts
        for (url, user), notifications in got.items():
            await wait_until(lambda n=notifications: len(n) >= posts, timeout=30)
            assert sorted(n["seq"] for n in notifications) == expected, (url, user)
        # The plain clients, which never sync, end complete too, each once: what their process
        # missed while its subscriber moved to the new primary comes from the bus catch-up
        # (which may order it after the process's own notifications of that moment).
        for (url, user), recorder in plain.items():
            await wait_until(lambda r=recorder: len(r.of("notification")) >= posts, timeout=30)
            seqs = [n["seq"] for n in recorder.of("notification")]
            assert sorted(seqs) == expected, (url, user)

        for client in clients:
            await client.close()
        for recorder in plain.values():
            await recorder.client.disconnect()
