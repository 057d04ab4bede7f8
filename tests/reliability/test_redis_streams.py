"""Redis Streams across processes (`python -m backend` on one PostgreSQL): a process killed
before its XACK leaves the message to another, which claims it and stores it once; two
processes sharing a stream store each message once."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from backend.publisher import Publisher

from ..conftest import create_pg_database
from ..processes import ServerProcess, server_env, start_server
from ..servers import PostgresServer, RedisServer, free_port

GROUP = "notifications"
MESSAGES = 30


@pytest.fixture
async def database(pg_server: PostgresServer) -> str:
    return await create_pg_database(pg_server)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def processes() -> AsyncIterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for process in started:
        process.stop()


def dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg", "postgresql")


async def start(
    started: list[ServerProcess], tmp_path: Path, database: str, redis_url: str, stream: str,
    claim_idle: str,
) -> ServerProcess:  # fmt: skip
    env = server_env(
        tmp_path, free_port(), DATABASE_URL=database, INGEST_REDIS_URL=redis_url,
        INGEST_REDIS_STREAMS=stream, INGEST_CLAIM_IDLE_SECONDS=claim_idle,
        EMAIL_WORKER_ENABLED="false",
    )  # fmt: skip
    process = start_server(env)
    started.append(process)
    await asyncio.to_thread(process.wait_listening)
    return process


async def eventually(check: Callable[[], object], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():  # type: ignore[misc]
            await asyncio.sleep(0.1)


async def titles(database: str) -> list[str]:
    connection = await asyncpg.connect(dsn(database))
    try:
        rows = await connection.fetch("SELECT title FROM notifications ORDER BY title")
    finally:
        await connection.close()
    return [row["title"] for row in rows]


async def test_a_message_pending_on_a_killed_process_is_claimed_and_stored_once_by_another(
    processes: list[ServerProcess], tmp_path: Path, database: str, redis: Redis,
    redis_server: RedisServer,
) -> None:  # fmt: skip
    stream = f"notifications-{uuid.uuid4().hex[:8]}"
    first = await start(processes, tmp_path, database, redis_server.url, stream, "60")

    async def group_exists() -> bool:
        return bool(await redis.exists(stream)) and bool(await redis.xinfo_groups(stream))

    await eventually(group_exists)
    # The database holds the first process up: it has read the message and cannot commit.
    locker = await asyncpg.connect(dsn(database))
    transaction = locker.transaction()
    await transaction.start()
    await locker.execute("LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE")
    body = {"user_ids": ["alice"], "type": "t", "title": "survives a crash"}  # no key of its own
    await redis.xadd(stream, {"message": json.dumps(body)})

    async def read_by_the_first() -> bool:
        summary = await redis.xpending(stream, GROUP)
        return int(summary["pending"]) == 1

    await eventually(read_by_the_first)
    [(consumer, _)] = [
        (c["name"], c["pending"]) for c in (await redis.xpending(stream, GROUP))["consumers"]
    ]
    assert f":{first.process.pid}:".encode() in consumer  # the consumer is the process
    first.stop()  # SIGKILL, before its XACK
    await transaction.rollback()
    await locker.close()
    assert int((await redis.xpending(stream, GROUP))["pending"]) == 1

    second = await start(processes, tmp_path, database, redis_server.url, stream, "1")

    async def acked() -> bool:
        return int((await redis.xpending(stream, GROUP))["pending"]) == 0

    await eventually(acked)
    assert await titles(database) == ["survives a crash"]
    assert any("claimed 1 pending message" in line for line in second.stderr), second.stderr


async def test_two_processes_sharing_a_stream_store_each_message_once(
    processes: list[ServerProcess], tmp_path: Path, database: str, redis: Redis,
    redis_server: RedisServer,
) -> None:  # fmt: skip
    stream = f"notifications-{uuid.uuid4().hex[:8]}"
    await start(processes, tmp_path, database, redis_server.url, stream, "60")
    await start(processes, tmp_path, database, redis_server.url, stream, "60")
    async with Publisher(redis_server.url) as publisher:
        for number in range(MESSAGES):
            await publisher.notify(
                user_ids=["alice"], type="t", title=f"message {number:02d}", stream=stream
            )

    async def all_acked() -> bool:
        [group] = await redis.xinfo_groups(stream)
        return group["entries-read"] == MESSAGES and group["pending"] == 0

    await eventually(all_acked)
    assert await titles(database) == [f"message {number:02d}" for number in range(MESSAGES)]
    assert len(await redis.xinfo_consumers(stream, GROUP)) == 2  # both took part
