"""Publish notifications and CloudEvents to this server through Redis, from any Python service.

Depends on redis-py only (copy this file into your service, or import it). Two ways, side by
side (README, "Events from other services"):

- a **stream** (the server's INGEST_REDIS_STREAMS): durable. Kept in Redis until a server
  process has committed it (at least once in); stored once however often it is delivered.
- a **channel** (INGEST_REDIS_CHANNELS): fire-and-forget. Lost when no server listens.

    async with Publisher("redis://localhost:6379/0") as publisher:
        await publisher.notify(
            user_ids=["alice"], type="task.assigned", title="You have a task",
            data={"task_id": 42}, stream="notifications",
        )
        await publisher.cloudevent(
            type="taskflow.tasks.created", source="/taskflow/api", subject="task-42",
            data={"task_id": "42", "title": "Write report", "user_id": "alice"},
            channel="task_updates",
        )

Each call answers the message's key: the `idempotency_key` of a notification request (a fresh
one unless given) or the CloudEvent `id`. Publishing again with the same key stores nothing more,
so a publish that failed halfway (a timeout) can simply be repeated with it.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from redis.asyncio import Redis

# A stream entry carries the JSON document in this field.
MESSAGE_FIELD = "message"


class Publisher:
    """A Redis client that writes messages in the form the server reads."""

    def __init__(
        self, url: str | None = None, *, redis: Redis | None = None, max_length: int = 100_000
    ) -> None:
        """`url` (redis://, rediss://) or an existing client; `max_length` trims each stream
        to about that many entries (acknowledged entries stay in a stream until trimmed)."""
        if (url is None) == (redis is None):
            raise ValueError("give exactly one of url or redis")
        self._redis = redis if redis is not None else Redis.from_url(url or "")
        self._owned = redis is None
        self._max_length = max_length

    async def notify(
        self,
        *,
        type: str,  # noqa: A002 - the field's name on the wire
        title: str,
        user_ids: list[str] | None = None,
        topic: str | None = None,
        body: str = "",
        icon: str | None = None,
        action_url: str | None = None,
        data: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        channel: str | None = None,
        stream: str | None = None,
    ) -> str:
        """A notification request (the body of POST /api/v1/notifications) to `user_ids` or a
        `topic`; answers its idempotency key."""
        key = idempotency_key or uuid.uuid4().hex
        message: dict[str, Any] = {"type": type, "title": title, "body": body}
        if user_ids is not None:
            message["user_ids"] = user_ids
        if topic is not None:
            message["topic"] = topic
        for name, value in (("icon", icon), ("action_url", action_url), ("data", data)):
            if value is not None:
                message[name] = value
        message["idempotency_key"] = key
        await self.publish(message, channel=channel, stream=stream)
        return key

    async def cloudevent(
        self,
        *,
        type: str,  # noqa: A002 - the CloudEvents attribute
        source: str,
        data: Any = None,
        id: str | None = None,  # noqa: A002 - the CloudEvents attribute
        subject: str | None = None,
        time: datetime | None = None,
        channel: str | None = None,
        stream: str | None = None,
    ) -> str:
        """A CloudEvent 1.0 (structured, JSON data), mapped by its `type` as the server's
        EVENT_MAPPINGS say; answers its id."""
        event_id = id or uuid.uuid4().hex
        event: dict[str, Any] = {
            "specversion": "1.0",
            "id": event_id,
            "source": source,
            "type": type,
            "time": (time or datetime.now(UTC)).isoformat(),
            "datacontenttype": "application/json",
            "data": data,
        }
        if subject is not None:
            event["subject"] = subject
        await self.publish(event, channel=channel, stream=stream)
        return event_id

    async def publish(
        self, message: dict[str, Any], *, channel: str | None = None, stream: str | None = None
    ) -> None:
        """Any JSON document, to exactly one of a channel (PUBLISH) or a stream (XADD)."""
        if (channel is None) == (stream is None):
            raise ValueError("give exactly one of channel or stream")
        payload = json.dumps(message, separators=(",", ":"))
        if channel is not None:
            await self._redis.publish(channel, payload)
        else:
            assert stream is not None
            await self._redis.xadd(
                stream, {MESSAGE_FIELD: payload}, maxlen=self._max_length, approximate=True
            )

    async def aclose(self) -> None:
        if self._owned:
            await self._redis.aclose()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
