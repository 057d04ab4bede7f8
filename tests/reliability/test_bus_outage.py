"""The Redis bus fails under two processes: nothing is lost, readiness says so, delivery resumes.

Each test has its own Redis (stopped, killed or fenced without hurting the others) and a
PostgreSQL database (SQLite is one process). Redis is stopped for 6 s rather than the issue's
20 s to keep the run short: the backoff is capped, so a longer outage changes nothing but time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as redis

from backend import keys
from backend.config import ConfigError, load_settings

from ..conftest import TEST_SECRET, Recorder, RunningServer
from ..servers import RedisServer, free_port, start_redis

Cluster = Callable[[str], Awaitable[RunningServer]]
USERS = ("alice", "bob")


@pytest.fixture
def bus_redis() -> Iterator[list[RedisServer]]:
    """A Redis of this test's own; a test that restarts it replaces the list's item."""
    holder = [start_redis()]
    try:
        yield holder
    finally:
        holder[0].stop()


# Several processes share one database: PostgreSQL only (SQLite is one process).
on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def cluster(make_server: Callable[..., Awaitable[RunningServer]]) -> Cluster:
    """Server processes (in this test's loop, each on its own port) on one PostgreSQL."""

    async def start(redis_url: str) -> RunningServer:
        return await make_server(redis_url=redis_url)

    return start


async def ready(server: RunningServer) -> tuple[int, dict[str, Any]]:
    status, body = await server.request("GET", "/health/ready")
    return status, body


async def wait_ready(server: RunningServer, want: int, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await ready(server)
        if status == want or time.monotonic() > deadline:
            assert status == want, body
            return body
        await asyncio.sleep(0.2)


async def connect_everyone(
    servers: list[RunningServer],
) -> dict[str, list[tuple[Recorder, str]]]:
    """Each user on each process; with each client's sid, to prove it never reconnects."""
    clients: dict[str, list[tuple[Recorder, str]]] = {user: [] for user in USERS}
    for server in servers:
        for user in USERS:
            recorder = await server.connect(user)
            sid = recorder.client.get_sid()
            assert sid is not None
            clients[user].append((recorder, sid))
    return clients


async def publish(
    server: RunningServer, created: dict[str, list[int]], source: set[int] | None = None
) -> list[dict[str, Any]]:
    notifications = await server.publish(list(USERS))
    for user, item in zip(USERS, notifications, strict=True):
        created[user].append(item["seq"])
        if source is not None:
            source.add(item["seq"])  # both users share seqs here: one POST, one seq each
    return notifications


async def assert_every_client_has_every_notification_once_in_order(
    clients: dict[str, list[tuple[Recorder, str]]],
    created: dict[str, list[int]],
    sources: list[set[int]] | None = None,
) -> None:
    """Each once, in seq order; with `sources` (the seqs each process published), in order per
    source only: while the bus is down a process's own clients get its notifications at once,
    and the others' when it catches up."""
    for user, recorders in clients.items():
        for recorder, _ in recorders:
            await recorder.wait_for("notification", count=len(created[user]), timeout=15)
    await asyncio.sleep(0.5)  # a duplicate would come now
    for user, recorders in clients.items():
        expected = sorted(created[user])
        for recorder, sid in recorders:
            got = [n["seq"] for n in recorder.of("notification")]
            if sources is None:
                assert got == expected
            else:
                assert sorted(got) == expected
                for published in sources:
                    mine = [seq for seq in got if seq in published]
                    assert mine == sorted(mine)
            assert recorder.client.connected and recorder.client.get_sid() == sid


async def until_received(recorder: Recorder, notification_id: int, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while notification_id not in [n["id"] for n in recorder.of("notification")]:
            await recorder.wait_for("notification", count=len(recorder.of("notification")) + 1)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def metrics(server: RunningServer) -> str:
    async with server.http.get(server.url + "/metrics") as response:
        return await response.text()


@on_postgresql
async def test_killed_subscriptions_lose_nothing_and_ready_is_503_while_deaf(
    bus_redis: list[RedisServer], cluster: Cluster
) -> None:
    a = await cluster(bus_redis[0].url)
    b = await cluster(bus_redis[0].url)
    clients = await connect_everyone([a, b])
    created: dict[str, list[int]] = {user: [] for user in USERS}
    await publish(a, created)
    admin = redis.Redis.from_url(bus_redis[0].url)
    try:
        # Every subscription killed, and kept out (no SUBSCRIBE allowed) while POSTs go on.
        await admin.execute_command("ACL", "SETUSER", "default", "-subscribe")
        await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        deadline = time.monotonic() + 8
        deaf = {a.port: False, b.port: False}
        while not all(deaf.values()) and time.monotonic() < deadline:
            await publish(a, created)
            for server in (a, b):
                status, body = await ready(server)
                if status == 503:
                    assert body["checks"]["bus"].startswith("deaf: ")
                    deaf[server.port] = True
            await asyncio.sleep(0.3)
        assert all(deaf.values()), "a process never reported itself deaf"
        assert metric(await metrics(b), "notify_bus_deaf") == 1
        await admin.execute_command("ACL", "SETUSER", "default", "+subscribe")
        for server in (a, b):
            assert (await wait_ready(server, 200))["checks"]["bus"] == "ok"
        await publish(b, created)
        await publish(a, created)
    finally:
        await admin.aclose()
    await assert_every_client_has_every_notification_once_in_order(clients, created)
    text = await metrics(b)
    assert metric(text, "notify_bus_deaf") == 0
    assert metric(text, "notify_bus_deaf_episodes_total") >= 1
    assert metric(text, "notify_bus_catch_up_notifications_total") >= 1


@on_postgresql
async def test_redis_stopped_and_restarted_loses_nothing_and_delivery_resumes_within_2_s(
    bus_redis: list[RedisServer], cluster: Cluster
) -> None:
    port = bus_redis[0].port
    a = await cluster(bus_redis[0].url)
    b = await cluster(bus_redis[0].url)
    clients = await connect_everyone([a, b])
    created: dict[str, list[int]] = {user: [] for user in USERS}
    sources: list[set[int]] = [set(), set()]
    await publish(b, created, sources[1])
    bus_redis[0].stop()
    # While Redis is away (6 s): POSTs answer 201, and the publishing process's own clients
    # get theirs at once.
    outage_end = time.monotonic() + 6
    while time.monotonic() < outage_end:
        for server, index in ((a, 0), (b, 1)):
            notifications = await publish(server, created, sources[index])
            await until_received(clients["alice"][index][0], notifications[0]["id"], timeout=3)
        await asyncio.sleep(0.5)
    for server in (a, b):
        assert (await ready(server))[0] == 503
    bus_redis[0] = start_redis(port=port)
    # Delivery resumes within 2 s: a POST on one process reaches the other's clients.
    [for_alice, _] = await publish(a, created, sources[0])
    await until_received(clients["alice"][1][0], for_alice["id"], timeout=2)
    for server in (a, b):
        await wait_ready(server, 200)
    await publish(b, created, sources[1])
    await assert_every_client_has_every_notification_once_in_order(clients, created, sources)


@on_postgresql
async def test_a_process_started_while_redis_is_down_serves_reports_and_joins_later(
    cluster: Cluster,
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    a = await cluster(url)
    status, body = await ready(a)
    assert status == 503
    assert body["checks"]["bus"].startswith("deaf: ") and "ConnectionError" in body["checks"]["bus"]
    on_a = await a.connect("alice")
    created: dict[str, list[int]] = {user: [] for user in USERS}
    [mine, _] = await publish(a, created)
    [got] = await on_a.wait_for("notification")
    assert got["id"] == mine["id"]
    started = start_redis(port=port)
    try:
        await wait_ready(a, 200)
        b = await cluster(url)
        on_b = await b.connect("alice")
        await publish(b, created)
        await publish(a, created)
        await on_a.wait_for("notification", count=3)
        await on_b.wait_for("notification", count=2)
        assert [n["seq"] for n in on_a.of("notification")] == created["alice"]
    finally:
        started.stop()


def test_a_canary_timeout_under_two_intervals_is_refused() -> None:
    env = {"JWT_SECRET": TEST_SECRET, "BUS_CANARY_INTERVAL_SECONDS": "2"}
    with pytest.raises(ConfigError, match="BUS_CANARY_TIMEOUT_SECONDS"):
        load_settings({**env, "BUS_CANARY_TIMEOUT_SECONDS": "3"})
    assert load_settings({**env, "BUS_CANARY_TIMEOUT_SECONDS": "4"}).bus_canary_timeout_seconds == 4


@on_postgresql
async def test_a_stalled_process_is_not_called_deaf_and_catches_nobody_up(
    cluster: Cluster, bus_redis: list[RedisServer]
) -> None:
    """A process whose own loop was starved of CPU longer than the canary timeout (a fan-out
    to a hundred thousand on a small box) had no chance to hear anything: that is not a deaf
    bus, and a false alarm would make every local session catch up from the database."""
    server = await cluster(bus_redis[0].url)
    await wait_ready(server, 200)
    watch = server.app[keys.BUS]
    episodes, gaps = watch.deaf_episodes, watch.gaps
    time.sleep(watch.timeout + 1.5)  # the whole loop blocked, as on a starved core
    await asyncio.sleep(2 * watch.interval + 0.5)
    assert watch.deaf_episodes == episodes and watch.gaps == gaps
    assert (await ready(server))[0] == 200
    # (a client in this same stalled loop gives up on its server's pings: a fresh one)
    client = await server.connect("stalled")
    await server.publish(["stalled"], title="after the stall")
    [note] = await client.wait_for("notification")
    assert note["title"] == "after the stall"
