"""Redis pub/sub: each message on INGEST_REDIS_CHANNELS becomes notifications, fire-and-forget.

Pub/sub keeps nothing: what is published while no process listens (or while this one
reconnects) is gone. Streams (streams.py) are the durable way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .messages import Backoff, MessageHandler, Outage, one_line

log = logging.getLogger(__name__)

# get_message waits this long at most, so the connection's health check runs on quiet channels.
POLL_SECONDS = 5.0


class ChannelSubscriber:
    """Subscribes, hands each message to the handler, and reconnects by itself."""

    def __init__(
        self,
        *,
        connect: Callable[[], Redis],
        channels: Sequence[str],
        handler: MessageHandler,
        retry_max_seconds: float,
    ) -> None:
        self._connect = connect
        self._channels = list(channels)
        self._handler = handler
        self._retry_max = retry_max_seconds
        self._database = Outage("Redis channel ingest: the database is")

    async def run(self) -> None:
        """Until cancelled: a lost connection is retried with capped backoff, logged once."""
        outage = Outage("Redis channel ingest: Redis is")
        backoff = Backoff(self._retry_max)
        while True:
            client = self._connect()
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(*self._channels)
                    outage.end()
                    backoff.reset()
                    log.info("subscribed to Redis channels %s", ", ".join(self._channels))
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=POLL_SECONDS
                        )
                        if message is not None and message["type"] == "message":
                            await self._deliver(message["channel"], message["data"])
            except (RedisError, OSError) as exc:
                outage.begin(one_line(exc))
            except Exception:  # a bug: logged, and the loop goes on after the backoff
                log.exception("Redis channel ingest failed; starting again")
            finally:
                await client.aclose()
            await asyncio.sleep(backoff.next())

    async def _deliver(self, channel: bytes | str, data: bytes | str) -> None:
        name = channel.decode(errors="replace") if isinstance(channel, bytes) else channel
        raw = data if isinstance(data, bytes) else data.encode(errors="surrogateescape")
        backoff = Backoff(self._retry_max)
        while True:
            try:
                outcome = await self._handler.handle(raw, transport="channel", name=name)
            except Exception:  # a bug must not end the subscription
                log.exception("channel %s: a message could not be handled; skipped", name)
                return
            if outcome.status != "retry":
                self._database.end()
                return
            # Redis buffers what arrives meanwhile (up to its pubsub output limit).
            self._database.begin(outcome.reason or "retry")
            await asyncio.sleep(backoff.next())
