"""The cluster-wide view over Redis: stats, status and cleanup answer for every process at the
moment they are asked, a killed process's sessions leave it by themselves, and the per-user cap
holds across processes."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio

from backend import keys
from backend.security import SCOPE_ADMIN

from ..conftest import Recorder, RunningServer
from ..processes import server_env, start_server
from ..servers import RedisServer, free_port, start_redis

MakeServer = Callable[..., Awaitable[RunningServer]]
STATS = "/api/v1/notifications/websocket/stats"
STATUS = "/api/v1/notifications/websocket/status"
ADMIN = {"sub": "root", "scopes": (SCOPE_ADMIN,)}
# Two servers on one database: PostgreSQL only (SQLite is for one process).
pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own: killing it, or a process on it, disturbs no other test."""
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def pair(make_server: MakeServer, own_redis: RedisServer) -> AsyncIterator[Any]:
    """Two processes on one database and one Redis, both subscribed to the bus."""
    a = await make_server(redis_url=own_redis.url)
    b = await make_server(redis_url=own_redis.url)
    await asyncio.sleep(0.3)  # both managers subscribed to the channel
    yield a, b


async def stats_of(server: RunningServer) -> dict[str, Any]:
    status, stats = await server.request("GET", STATS, **ADMIN)  # type: ignore[arg-type]
    assert status == 200, stats
    return stats


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


def local_sessions(server: RunningServer) -> int:
    manager = server.app[keys.SIO].manager
    return sum(
        1 for sid, _ in manager.get_participants("/", None) if manager.is_connected(sid, "/")
    )


async def test_a_user_on_two_processes_counts_once_and_stats_are_exact_when_asked(
    pair: tuple[RunningServer, RunningServer],
) -> None:
    a, b = pair
    await a.connect("alice")
    alice_on_b = await b.connect("alice")
    await b.connect("bob")
    # Asked at once, on either process: no snapshot to wait for.
    for server in (a, b):
        stats = await stats_of(server)
        assert stats["connections"] == 3
        assert stats["online_users"] == 2  # alice once, though she is on both
        assert stats["rooms"] == {"user:alice": 2, "user:bob": 1}
        assert stats["transports"] == {"websocket": 3}
        assert len(stats["processes"]) == 2
    status, mine = await a.request("GET", STATUS, sub="alice")
    assert status == 200 and mine["online"] is True and mine["connections"] == 2
    assert alice_on_b.client.get_sid() in {s["sid"] for s in mine["sessions"]}

    await alice_on_b.client.disconnect()

    async def alice_once() -> bool:
        stats = await stats_of(a)
        return stats["connections"] == 2 and stats["rooms"] == {"user:alice": 1, "user:bob": 1}

    await eventually(alice_once, timeout=1.5)  # well inside the old 5 s snapshot
    assert (await stats_of(a))["online_users"] == 2
    status, mine = await a.request("GET", STATUS, sub="alice")
    assert mine["connections"] == 1
    status, bobs = await a.request("GET", STATUS, sub="bob")
    assert bobs["online"] is True and bobs["connections"] == 1
    status, carols = await a.request("GET", STATUS, sub="carol")
    assert carols["online"] is False and carols["sessions"] == []


async def test_a_killed_process_leaves_the_view_by_itself(
    make_server: MakeServer, own_redis: RedisServer, database_url: str, tmp_path: Path
) -> None:
    a = await make_server(redis_url=own_redis.url)  # migrates the shared database
    port = free_port()
    env = server_env(
        tmp_path, port, DATABASE_URL=database_url, REDIS_URL=own_redis.url,
        CLUSTER_TTL_SECONDS="3", EMAIL_WORKER_ENABLED="false",
    )  # fmt: skip
    doomed = start_server(env)
    clients: list[socketio.AsyncClient] = []
    try:
        await asyncio.to_thread(doomed.wait_listening)
        for user in ("alice", "carol"):
            recorder = Recorder()
            clients.append(recorder.client)
            await recorder.client.connect(
                f"http://127.0.0.1:{port}", auth={"token": a.token(user)},
                transports=["websocket"], wait_timeout=10,
            )  # fmt: skip
        await a.connect("alice")

        async def all_there() -> bool:
            stats = await stats_of(a)
            return stats["connections"] == 3 and len(stats["processes"]) == 2

        await eventually(all_there, timeout=5)
        assert (await stats_of(a))["online_users"] == 2

        doomed.process.send_signal(signal.SIGKILL)  # no cleanup of its own runs
        await asyncio.to_thread(doomed.process.wait, 20)

        async def gone() -> bool:
            stats = await stats_of(a)
            return stats["connections"] == 1 and stats["processes"] == [stats["process"]]

        await eventually(gone, timeout=15)  # the TTL is 3 s
        stats = await stats_of(a)
        assert stats["online_users"] == 1 and stats["rooms"] == {"user:alice": 1}
        status, carols = await a.request("GET", STATUS, sub="carol")
        assert carols["online"] is False and carols["connections"] == 0
        status, alices = await a.request("GET", STATUS, sub="alice")
        assert alices["connections"] == 1
    finally:
        for client in clients:
            if client.connected:
                await client.disconnect()
        doomed.stop()


async def test_cleanup_on_one_process_disconnects_a_stale_session_on_another(
    make_server: MakeServer, own_redis: RedisServer
) -> None:
    # A beat every 0.2 s: the other process's last-event times reach Redis that often.
    a = await make_server(redis_url=own_redis.url, cluster_ttl_seconds=1)
    b = await make_server(redis_url=own_redis.url, cluster_ttl_seconds=1)
    await asyncio.sleep(0.3)
    quiet = await b.connect("alice")
    chatty = await b.connect("bob")
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # bob keeps talking; alice says nothing
        assert (await chatty.call("heartbeat"))["ok"] is True
        await asyncio.sleep(0.1)
    status, body = await a.request(
        "POST", "/api/v1/notifications/websocket/cleanup?timeout_seconds=1", **ADMIN
    )  # type: ignore[arg-type]
    assert status == 200, body
    assert body == {"cleaned": 1, "sids": [quiet.client.get_sid()]}
    stats = await stats_of(a)  # out of the view at once
    assert stats["connections"] == 1 and stats["rooms"] == {"user:bob": 1}

    async def disconnected() -> bool:
        return not quiet.client.connected and local_sessions(b) == 1

    await eventually(disconnected, timeout=5)  # really closed, on the process that held it
    assert chatty.client.connected


async def test_the_per_user_cap_holds_across_processes_under_concurrent_connects(
    make_server: MakeServer, own_redis: RedisServer
) -> None:
    cap = 3
    # Long pings: a session may only leave by the cap.
    settings = {"max_connections_per_user": cap, "ping_interval_seconds": 25}
    a = await make_server(redis_url=own_redis.url, ping_timeout_seconds=20, **settings)
    b = await make_server(redis_url=own_redis.url, ping_timeout_seconds=20, **settings)
    await asyncio.sleep(0.3)
    recorders = [Recorder() for _ in range(16)]
    targets = [a, b] * 8

    async def connect(recorder: Recorder, server: RunningServer) -> None:
        await recorder.client.connect(
            server.url, auth={"token": server.token("alice")}, transports=["websocket"],
            wait_timeout=10,
        )  # fmt: skip

    try:
        await asyncio.gather(
            *(connect(r, s) for r, s in zip(recorders, targets, strict=True)),
            return_exceptions=True,  # one displaced while connecting is refused
        )

        async def at_cap() -> bool:
            return local_sessions(a) + local_sessions(b) == cap

        await eventually(at_cap, timeout=10)  # the displaced are told, then disconnected
        stats = await stats_of(a)
        assert stats["connections"] == cap and stats["rooms"] == {"user:alice": cap}
        status, mine = await b.request("GET", STATUS, sub="alice")
        assert mine["connections"] == cap
        assert sum(1 for r in recorders if r.client.connected) == cap
        # Those displaced once connected were told why (the others were refused at connect).
        assert all(not r.client.connected for r in recorders if r.of("session_closed"))

        [created] = await a.publish(["alice"])
        await asyncio.sleep(0.5)
        reached = [r for r in recorders if created in r.of("notification")]
        assert len(reached) == cap
    finally:
        for recorder in recorders:
            if recorder.client.connected:
                await recorder.client.disconnect()


async def test_connects_work_on_the_process_cap_while_redis_is_away_and_the_view_returns(
    make_server: MakeServer, own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="backend.realtime.cluster")
    a = await make_server(
        redis_url=own_redis.url, cluster_ttl_seconds=1, max_connections_per_user=2,
        ping_interval_seconds=25, ping_timeout_seconds=20,
    )  # fmt: skip
    first = await a.connect("alice")
    await asyncio.to_thread(own_redis.stop)
    back: RedisServer | None = None
    try:
        # Never refused because Redis is away; the cap still holds on the process.
        later = [await a.connect("alice") for _ in range(3)]
        assert all(r.client.connected for r in later[-2:])
        await eventually(lambda: asyncio.sleep(0, local_sessions(a) == 2), timeout=5)
        assert not first.client.connected
        status, body = await a.request("GET", STATS, **ADMIN)  # type: ignore[arg-type]
        assert status == 503 and body["error"]["code"] == "unavailable"
        await asyncio.sleep(0.5)  # a few beats fail
        lost = [r for r in caplog.records if "cluster view unavailable" in r.getMessage()]
        assert len(lost) == 1  # said once, not per connect or per beat

        back = await asyncio.to_thread(start_redis, port=own_redis.port)

        async def written_again() -> bool:
            status, stats = await a.request("GET", STATS, **ADMIN)  # type: ignore[arg-type]
            return status == 200 and stats["connections"] == 2

        await eventually(written_again, timeout=10)
        assert (await stats_of(a))["rooms"] == {"user:alice": 2}
    finally:
        if back is not None:
            back.stop()
