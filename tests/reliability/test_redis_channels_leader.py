"""One process of the cluster consumes a Redis channel at a time (the holder of its lease in
Redis), so a channel message without an `idempotency_key` is stored once however many processes
run; a holder stopped cleanly hands the channel over at once, one killed within the lease."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select

from backend import keys
from backend.config import ConfigError, load_settings
from backend.ingest.channels import lease_key
from backend.models import Notification

from ..conftest import RunningServer, create_pg_database
from ..processes import ServerProcess, server_env, start_server
from ..servers import PostgresServer, RedisServer, free_port

Start = Callable[..., Awaitable[RunningServer]]
MESSAGES = 20


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


def unique_channel() -> str:
    return f"task_updates-{uuid.uuid4().hex[:8]}"


def request(title: str) -> str:
    """A notification request as other publishers send it: no idempotency_key."""
    return json.dumps({"user_ids": ["alice"], "type": "t", "title": title})


async def held_by(redis: Redis, channel: str, holder: Callable[[str], bool]) -> None:
    """The lease is `holder`'s and exactly one process is subscribed."""

    async def check() -> bool:
        value = await redis.get(lease_key(channel))
        [(_, subscribers)] = await redis.pubsub_numsub(channel)
        return value is not None and holder(value) and subscribers == 1

    await eventually(check)


async def publish_and_wait(
    redis: Redis, channel: str, titles: list[str], count: Callable[[], Awaitable[int]]
) -> None:
    """Publishes each title, then a marker, and waits until the marker is stored (the holder
    handles its channel in order, so everything before it is stored by then)."""
    before = await count()
    for title in titles:
        await redis.publish(channel, request(title))
    await redis.publish(channel, request("marker"))

    async def done() -> bool:
        return await count() >= before + len(titles) + 1

    await eventually(done)


async def stored(server: RunningServer) -> int:
    async with server.app[keys.SESSIONMAKER]() as session:
        query = (
            select(func.count()).select_from(Notification).where(Notification.user_id == "alice")
        )
        return int(await session.scalar(query) or 0)


async def titles(server: RunningServer) -> list[str]:
    async with server.app[keys.SESSIONMAKER]() as session:
        query = select(Notification.title).where(Notification.title != "marker")
        return sorted(await session.scalars(query))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_processes_on_one_channel_store_each_message_without_a_key_once(
    make_server: Start, redis: Redis, redis_server: RedisServer
) -> None:
    channel = unique_channel()
    options = {
        "ingest_redis_url": redis_server.url,
        "ingest_redis_channels": (channel,),
        "ingest_channel_lease_seconds": 1.0,
    }
    first = await make_server(**options)
    second = await make_server(**options)
    pids = {first.app[keys.PROCESS_ID], second.app[keys.PROCESS_ID]}
    await held_by(redis, channel, lambda value: value in pids)
    sent = [f"message {number:02d}" for number in range(MESSAGES)]
    await publish_and_wait(redis, channel, sent, lambda: stored(first))
    assert await titles(first) == sent  # each once
    assert await stored(first) == MESSAGES + 1
    [(_, subscribers)] = await redis.pubsub_numsub(channel)
    assert subscribers == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_holder_stopped_cleanly_releases_the_channel_and_another_takes_it_over(
    make_server: Start, redis: Redis, redis_server: RedisServer
) -> None:
    channel = unique_channel()
    # A long lease: the handover below cannot be its expiry.
    options = {
        "ingest_redis_url": redis_server.url,
        "ingest_redis_channels": (channel,),
        "ingest_channel_lease_seconds": 30.0,
    }
    first = await make_server(**options)
    await held_by(redis, channel, lambda value: value == first.app[keys.PROCESS_ID])
    second = await make_server(**options)
    await publish_and_wait(redis, channel, ["before"], lambda: stored(second))
    await first.stop()
    assert await redis.get(lease_key(channel)) in (None, second.app[keys.PROCESS_ID])
    # The other tries every third of the lease: it holds the channel long before the lease
    # the first one had would have run out.
    await held_by(redis, channel, lambda value: value == second.app[keys.PROCESS_ID])
    sent = [f"after {number:02d}" for number in range(MESSAGES)]
    await publish_and_wait(redis, channel, sent, lambda: stored(second))
    assert await titles(second) == sorted(["before", *sent])
    assert await stored(second) == MESSAGES + 3  # two markers


# -- processes ---------------------------------------------------------------------------------


@pytest.fixture
async def processes() -> AsyncIterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for process in started:
        process.stop()


async def test_a_killed_holder_is_replaced_within_the_lease_and_messages_are_stored_once(
    processes: list[ServerProcess], tmp_path: Path, pg_server: PostgresServer, redis: Redis,
    redis_server: RedisServer,
) -> None:  # fmt: skip
    database = await create_pg_database(pg_server)
    channel = unique_channel()

    async def start() -> ServerProcess:
        env = server_env(
            tmp_path, free_port(), DATABASE_URL=database, INGEST_REDIS_URL=redis_server.url,
            INGEST_REDIS_CHANNELS=channel, INGEST_CHANNEL_LEASE_SECONDS="2",
            EMAIL_WORKER_ENABLED="false",
        )  # fmt: skip
        process = start_server(env)
        processes.append(process)
        await asyncio.to_thread(process.wait_listening)
        return process

    def of(process: ServerProcess) -> Callable[[str], bool]:
        return lambda value: f":{process.process.pid}:" in value

    dsn = database.replace("postgresql+asyncpg", "postgresql")

    async def count() -> int:
        connection = await asyncpg.connect(dsn)
        try:
            return int(await connection.fetchval("SELECT count(*) FROM notifications"))
        finally:
            await connection.close()

    first = await start()
    await held_by(redis, channel, of(first))
    second = await start()
    await publish_and_wait(redis, channel, ["before"], count)
    first.stop()  # SIGKILL: no release, its renewals stop
    assert of(first)(await redis.get(lease_key(channel)) or "")
    await held_by(redis, channel, of(second))
    sent = [f"after {number:02d}" for number in range(MESSAGES)]
    await publish_and_wait(redis, channel, sent, count)
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT title FROM notifications WHERE title <> 'marker' ORDER BY title"
        )
    finally:
        await connection.close()
    assert [row["title"] for row in rows] == sorted(["before", *sent])
    assert await count() == MESSAGES + 3


def test_the_channel_lease_is_validated_with_one_line() -> None:
    base = {"JWT_SECRET": "x" * 40, "REDIS_URL": "redis://r", "INGEST_REDIS_CHANNELS": "a"}
    assert load_settings(base).ingest_channel_lease_seconds == 5.0
    with pytest.raises(ConfigError) as caught:
        load_settings({**base, "INGEST_CHANNEL_LEASE_SECONDS": "0.5"})
    assert str(caught.value) == "INGEST_CHANNEL_LEASE_SECONDS must be between 1 and 300, got 0.5"
    with pytest.raises(ConfigError, match="INGEST_CHANNEL_LEASE_SECONDS"):
        load_settings({**base, "INGEST_CHANNEL_LEASE_SECONDS": "soon"})
    assert (
        load_settings({**base, "INGEST_CHANNEL_LEASE_SECONDS": "2"}).ingest_channel_lease_seconds
        == 2.0
    )
