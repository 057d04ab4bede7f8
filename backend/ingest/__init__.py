"""Events from Redis: channels (fire-and-forget) and streams (a consumer group, at least once)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from redis.asyncio import Redis

from ..config import Settings
from ..services.events import EventIngest
from ..services.notifications import NotificationService
from .channels import ChannelSubscriber
from .connection import redis_client
from .messages import MessageHandler
from .streams import StreamConsumer


def build(
    settings: Settings,
    *,
    ingest: EventIngest,
    notifications: NotificationService,
    consumer: str,
) -> tuple[MessageHandler, dict[str, Coroutine[Any, Any, None]]]:
    """The handler (its counters feed /metrics) and the loops to run, by task name; no loops
    when no channel or stream is configured."""
    handler = MessageHandler(
        ingest=ingest,
        notifications=notifications,
        max_body_bytes=settings.max_body_bytes,
        max_json_depth=settings.max_json_depth,
        max_data_bytes=settings.max_data_bytes,
    )
    url = settings.ingest_url
    loops: dict[str, Coroutine[Any, Any, None]] = {}
    if url is None:
        return handler, loops

    def connect() -> Redis:
        return redis_client(url)

    if settings.ingest_redis_channels:
        subscriber = ChannelSubscriber(
            connect=connect,
            channels=settings.ingest_redis_channels,
            handler=handler,
            retry_max_seconds=settings.ingest_retry_max_seconds,
            process_id=consumer,
            lease_seconds=settings.ingest_channel_lease_seconds,
        )
        loops["redis-channels"] = subscriber.run()
    if settings.ingest_redis_streams:
        streams = StreamConsumer(
            connect=connect,
            streams=settings.ingest_redis_streams,
            group=settings.ingest_stream_group,
            consumer=consumer,
            handler=handler,
            batch_size=settings.ingest_batch_size,
            claim_idle_seconds=settings.ingest_claim_idle_seconds,
            max_deliveries=settings.ingest_max_deliveries,
            dead_max_length=settings.ingest_dead_max_length,
            retry_max_seconds=settings.ingest_retry_max_seconds,
        )
        loops["redis-streams"] = streams.run()
    return handler, loops
