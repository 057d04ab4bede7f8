"""Events from Redis (issue 13, item 2): channel messages (fire-and-forget) and stream messages
(a consumer group: acknowledged after the commit, poison to `<stream>.dead`) reach the user's
socket through the one NotificationService; bad input is one log line and a count."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from backend import keys
from backend.config import ConfigError, load_settings
from backend.models import Notification
from backend.publisher import Publisher

from .conftest import RunningServer
from .servers import RedisServer, start_redis

Start = Callable[..., Awaitable[RunningServer]]
TASK_DATA = {"task_id": "42", "title": "Write report", "user_id": "alice"}


def unique(prefix: str) -> str:
    """Channels and streams of one test: the Redis server is shared by the session."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def publisher(redis_server: RedisServer) -> AsyncIterator[Publisher]:
    async with Publisher(redis_server.url) as publisher:
        yield publisher


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def subscribed(redis: Redis, channel: str) -> None:
    async def check() -> bool:
        [(_, count)] = await redis.pubsub_numsub(channel)
        return bool(count)

    await eventually(check)


async def consuming(redis: Redis, stream: str, group: str = "notifications") -> None:
    """The server's group exists (created from the stream's start: it reads what comes next)."""

    async def check() -> bool:
        if not await redis.exists(stream):
            return False
        return any(g["name"] == group.encode() for g in await redis.xinfo_groups(stream))

    await eventually(check)


async def pending(redis: Redis, stream: str) -> int:
    return int((await redis.xpending(stream, "notifications"))["pending"])


async def metrics(server: RunningServer) -> str:
    async with server.http.get(server.url + "/metrics") as resp:
        return await resp.text()


async def inbox(server: RunningServer, user: str) -> list[str]:
    status, page = await server.request(
        "GET", "/api/v1/notifications", sub=user, params={"limit": "100"}
    )
    assert status == 200, page
    return sorted(n["title"] for n in page["notifications"])


# -- channels ----------------------------------------------------------------------------------


async def test_a_channel_notification_request_and_cloudevent_reach_the_users_socket(
    make_server: Start, redis: Redis, publisher: Publisher, redis_server: RedisServer
) -> None:
    channel = unique("task_updates")
    server = await make_server(ingest_redis_url=redis_server.url, ingest_redis_channels=(channel,))
    alice = await server.connect("alice")
    await subscribed(redis, channel)
    await publisher.notify(
        user_ids=["alice"], type="task.assigned", title="You have a task",
        data={"task_id": 7}, channel=channel,
    )  # fmt: skip
    await publisher.cloudevent(
        type="taskflow.tasks.created", source="/taskflow/api", data=TASK_DATA, channel=channel
    )
    first, second = await alice.wait_for("notification", 2)
    assert (first["type"], first["title"], first["data"]) == (
        "task.assigned",
        "You have a task",
        {"task_id": 7},
    )
    assert (second["type"], second["title"]) == ("task.created", "New task: Write report")
    async with server.app[keys.SESSIONMAKER]() as session:
        publishers = list(
            await session.scalars(select(Notification.publisher).order_by(Notification.id))
        )
    assert publishers == [f"redis:{channel}", "/taskflow/api"]
    text = await metrics(server)
    assert 'notify_redis_messages_total{outcome="stored",transport="channel"} 2.0' in text


async def test_a_malformed_channel_message_is_skipped_with_one_log_line_and_counted(
    make_server: Start, redis: Redis, publisher: Publisher, redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING, logger="backend")
    channel = unique("task_updates")
    server = await make_server(
        ingest_redis_url=redis_server.url, ingest_redis_channels=(channel,),
        max_body_bytes=4096, max_json_depth=8,
    )  # fmt: skip
    alice = await server.connect("alice")
    await subscribed(redis, channel)
    nested: Any = {}
    for _ in range(20):
        nested = {"x": nested}
    bad = [
        b"{not json",
        b"\xff\xfe",
        b"[1, 2]",
        json.dumps({"user_ids": ["alice"], "type": "t", "title": "x" * 5000}).encode(),
        json.dumps({"user_ids": ["alice"], "type": "t", "title": "deep", "data": nested}).encode(),
        json.dumps({"user_ids": ["alice"], "title": "no type"}).encode(),
        json.dumps({"specversion": "1.0", "id": "x", "type": "no source"}).encode(),
    ]
    for raw in bad:
        await redis.publish(channel, raw)
    await publisher.notify(user_ids=["alice"], type="t", title="still here", channel=channel)
    [note] = await alice.wait_for("notification")
    assert note["title"] == "still here"
    lines = [r.getMessage() for r in caplog.records if "redis message dropped" in r.getMessage()]
    assert len(lines) == len(bad), lines
    assert all(f"from channel {channel}" in line for line in lines)
    assert not [r for r in caplog.records if r.exc_info]  # no traceback
    text = await metrics(server)
    for reason, count in (("malformed", 4), ("too_large", 1), ("too_deep", 1), ("invalid", 1)):
        assert f'notify_redis_messages_dropped_total{{reason="{reason}"}} {count}.0' in text


async def test_the_channel_subscriber_reconnects_by_itself_and_logs_an_outage_once(
    make_server: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="backend.ingest")
    own = start_redis()
    try:
        channel = unique("task_updates")
        server = await make_server(
            ingest_redis_url=own.url, ingest_redis_channels=(channel,),
            ingest_retry_max_seconds=0.3,
        )  # fmt: skip
        alice = await server.connect("alice")
        async with Publisher(own.url) as publisher:
            redis = Redis.from_url(own.url)
            await subscribed(redis, channel)
            await redis.aclose()
            own.stop()
            await asyncio.sleep(2)  # several tries while Redis is away
            own = start_redis(port=own.port)
            redis = Redis.from_url(own.url)
            await subscribed(redis, channel)
            await redis.aclose()
            await publisher.notify(user_ids=["alice"], type="t", title="back", channel=channel)
            [note] = await alice.wait_for("notification")
        assert note["title"] == "back"
        messages = [r.getMessage() for r in caplog.records]
        assert len([m for m in messages if "Redis is unavailable" in m]) == 1, messages
        assert len([m for m in messages if "Redis is reachable again" in m]) == 1, messages
    finally:
        own.stop()


# -- streams -----------------------------------------------------------------------------------


async def test_a_stream_message_is_stored_once_and_acknowledged(
    make_server: Start, redis: Redis, publisher: Publisher, redis_server: RedisServer
) -> None:
    stream = unique("notifications")
    server = await make_server(ingest_redis_url=redis_server.url, ingest_redis_streams=(stream,))
    alice = await server.connect("alice")
    await consuming(redis, stream)
    key = await publisher.notify(
        user_ids=["alice"], type="task.assigned", title="from a stream", stream=stream
    )
    event_id = await publisher.cloudevent(
        type="taskflow.tasks.created", source="/taskflow/api", data=TASK_DATA, stream=stream
    )
    await alice.wait_for("notification", 2)

    async def all_acked() -> bool:
        groups = await redis.xinfo_groups(stream)
        return await pending(redis, stream) == 0 and groups[0]["entries-read"] == 2

    await eventually(all_acked)
    # Published again (a publisher's retry): acknowledged, nothing more stored.
    await publisher.notify(
        user_ids=["alice"], type="task.assigned", title="from a stream", stream=stream,
        idempotency_key=key,
    )  # fmt: skip
    await publisher.cloudevent(
        type="taskflow.tasks.created", source="/taskflow/api", data=TASK_DATA, stream=stream,
        id=event_id,
    )  # fmt: skip

    async def four_acked() -> bool:
        groups = await redis.xinfo_groups(stream)
        return await pending(redis, stream) == 0 and groups[0]["entries-read"] == 4

    await eventually(four_acked)
    assert await inbox(server, "alice") == ["New task: Write report", "from a stream"]
    assert len(alice.of("notification")) == 2
    text = await metrics(server)
    assert 'notify_redis_messages_total{outcome="duplicate",transport="stream"} 2.0' in text


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_stream_message_stays_pending_until_its_notification_is_committed(
    make_server: Start, redis: Redis, publisher: Publisher, redis_server: RedisServer,
    database_url: str,
) -> None:  # fmt: skip
    stream = unique("notifications")
    server = await make_server(ingest_redis_url=redis_server.url, ingest_redis_streams=(stream,))
    alice = await server.connect("alice")
    await consuming(redis, stream)
    locker = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE")
        await publisher.notify(user_ids=["alice"], type="t", title="slow", stream=stream)

        async def read() -> bool:
            return int((await redis.xinfo_groups(stream))[0]["entries-read"] or 0) == 1

        await eventually(read)
        await asyncio.sleep(0.5)  # read, and waiting for the database
        assert await pending(redis, stream) == 1
        assert alice.of("notification") == []
        await transaction.rollback()
    finally:
        await locker.close()
    [note] = await alice.wait_for("notification")
    assert note["title"] == "slow"

    async def acked() -> bool:
        return await pending(redis, stream) == 0

    await eventually(acked)


async def dead_letters(redis: Redis, stream: str) -> list[dict[str, str]]:
    entries = await redis.xrange(f"{stream}.dead")
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def test_a_poison_stream_message_ends_in_the_dead_stream_with_its_reason(
    make_server: Start, redis: Redis, publisher: Publisher, redis_server: RedisServer
) -> None:
    stream = unique("notifications")
    server = await make_server(ingest_redis_url=redis_server.url, ingest_redis_streams=(stream,))
    alice = await server.connect("alice")
    await consuming(redis, stream)
    await redis.xadd(stream, {"message": "{not json"})
    await redis.xadd(stream, {"message": json.dumps({"user_ids": ["alice"], "type": "t"})})
    await redis.xadd(stream, {"payload": "{}"})
    await publisher.cloudevent(type="nobody.maps.this", source="/x", data={}, stream=stream)
    await publisher.notify(user_ids=["alice"], type="t", title="after the poison", stream=stream)
    [note] = await alice.wait_for("notification")
    assert note["title"] == "after the poison"

    async def four_dead() -> bool:
        return len(await dead_letters(redis, stream)) == 4

    await eventually(four_dead)
    dead = await dead_letters(redis, stream)
    assert dead[0]["message"] == "{not json"
    assert dead[0]["reason"].startswith("malformed JSON")
    assert "give exactly one of title or template" in dead[1]["reason"]
    assert dead[2]["payload"] == "{}"
    assert dead[2]["reason"] == "no 'message' field (fields: payload)"
    assert dead[3]["reason"] == "no mapping for 'nobody.maps.this'"
    assert all(d["deliveries"] == "1" and d["original_id"] for d in dead)
    assert await pending(redis, stream) == 0
    assert "notify_redis_dead_lettered_total 4.0" in await metrics(server)


async def test_a_message_delivered_more_than_max_deliveries_times_ends_in_the_dead_stream(
    make_server: Start, redis: Redis, redis_server: RedisServer
) -> None:
    """A message that keeps killing whoever reads it (left pending, claimed, again...)."""
    stream = unique("notifications")
    await redis.xgroup_create(stream, "notifications", id="0", mkstream=True)
    body = {"user_ids": ["alice"], "type": "t", "title": "kills its consumer"}
    entry_id = await redis.xadd(stream, {"message": json.dumps(body)})
    await redis.xreadgroup("notifications", "crashed", {stream: ">"})
    # As if claimed and crashed four more times: five deliveries so far.
    await redis.xclaim(stream, "notifications", "crashed", 0, [entry_id], retrycount=5)
    server = await make_server(
        ingest_redis_url=redis_server.url, ingest_redis_streams=(stream,),
        ingest_claim_idle_seconds=0.5, ingest_max_deliveries=5,
    )  # fmt: skip

    async def dead() -> bool:
        return bool(await dead_letters(redis, stream))

    await eventually(dead)
    [letter] = await dead_letters(redis, stream)
    assert letter["reason"] == "delivered 6 times without being acknowledged"
    assert letter["original_id"] == entry_id.decode()
    assert await pending(redis, stream) == 0
    assert await inbox(server, "alice") == []


# -- configuration -----------------------------------------------------------------------------


def test_channels_or_streams_without_a_redis_url_are_a_one_line_config_error() -> None:
    base = {"JWT_SECRET": "x" * 40}
    with pytest.raises(ConfigError) as caught:
        load_settings({**base, "INGEST_REDIS_STREAMS": "notifications"})
    assert str(caught.value) == (
        "INGEST_REDIS_CHANNELS and INGEST_REDIS_STREAMS need INGEST_REDIS_URL or REDIS_URL"
    )
    with pytest.raises(ConfigError, match="INGEST_REDIS_CHANNELS has an invalid name"):
        load_settings({**base, "REDIS_URL": "redis://r", "INGEST_REDIS_CHANNELS": "a b"})
    with pytest.raises(ConfigError, match="INGEST_MAX_DELIVERIES must be at least 2"):
        load_settings({**base, "REDIS_URL": "redis://r", "INGEST_MAX_DELIVERIES": "1"})
    settings = load_settings(
        {**base, "REDIS_URL": "redis://r/0", "INGEST_REDIS_CHANNELS": "task_updates, alerts",
         "INGEST_REDIS_STREAMS": "notifications", "INGEST_CLAIM_IDLE_SECONDS": "5"}
    )  # fmt: skip
    assert settings.ingest_url == "redis://r/0"
    assert settings.ingest_redis_channels == ("task_updates", "alerts")
    assert (settings.ingest_redis_streams, settings.ingest_claim_idle_seconds) == (
        ("notifications",),
        5.0,
    )


async def test_a_stream_message_committed_but_not_acknowledged_before_a_crash_is_stored_once(
    make_server: Start, redis: Redis, redis_server: RedisServer
) -> None:
    """A request without an idempotency_key: its key is `<stream>:<message id>`, so the
    redelivery of one whose consumer committed and died before XACK stores nothing more."""
    stream = unique("notifications")
    await redis.xgroup_create(stream, "notifications", id="0", mkstream=True)
    raw = json.dumps({"user_ids": ["alice"], "type": "t", "title": "once"}).encode()
    entry_id = await redis.xadd(stream, {"message": raw})
    await redis.xreadgroup("notifications", "crashed", {stream: ">"})
    # What the consumer that crashed did before it could acknowledge: the commit.
    first = await make_server(
        ingest_redis_url=redis_server.url, ingest_redis_streams=(unique("elsewhere"),)
    )
    outcome = await first.app[keys.REDIS_INGEST].handle(
        raw, transport="stream", name=stream, message_id=entry_id.decode()
    )
    assert outcome.status == "stored"
    await first.stop()
    server = await make_server(
        ingest_redis_url=redis_server.url, ingest_redis_streams=(stream,),
        ingest_claim_idle_seconds=0.3,
    )  # fmt: skip

    async def acked() -> bool:
        return await pending(redis, stream) == 0

    await eventually(acked)
    assert await inbox(server, "alice") == ["once"]
    text = await metrics(server)
    assert 'notify_redis_messages_total{outcome="duplicate",transport="stream"} 1.0' in text
