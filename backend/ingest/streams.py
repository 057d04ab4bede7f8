"""Redis Streams: INGEST_REDIS_STREAMS read through a consumer group, at least once in, each
message stored once.

Every process is one consumer of the group (its process id); XREADGROUP gives each message to
one of them. A message is acknowledged (XACK) only after its notifications are committed (or
found committed before, or it can never succeed). While the database is away it stays pending
and is tried again here; a process that dies leaves its pending messages to the others, which
claim them (XAUTOCLAIM) once idle for INGEST_CLAIM_IDLE_SECONDS. A redelivery is stored once:
CloudEvents by (source, id), requests by their idempotency key, or `<stream>:<message id>`.
A message that can never succeed, or that was delivered more than INGEST_MAX_DELIVERIES times
(it keeps killing its consumer), is moved to `<stream>.dead` with the reason, and acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from ..logs import one_line
from .connection import BLOCK_MS
from .messages import Backoff, MessageHandler, Outage

log = logging.getLogger(__name__)

MESSAGE_FIELD = b"message"
DEAD_SUFFIX = ".dead"
# XAUTOCLAIM calls per stream per pass: a large backlog of orphans is taken over several passes.
CLAIM_ROUNDS = 10

Entry = tuple[bytes, dict[bytes, bytes] | None]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class StreamConsumer:
    """One consumer of the group on every configured stream, until cancelled."""

    def __init__(
        self,
        *,
        connect: Callable[[], Redis],
        streams: Sequence[str],
        group: str,
        consumer: str,
        handler: MessageHandler,
        batch_size: int,
        claim_idle_seconds: float,
        max_deliveries: int,
        dead_max_length: int,
        retry_max_seconds: float,
    ) -> None:
        self._connect = connect
        self._streams = list(streams)
        self._group = group
        self.consumer = consumer
        self._handler = handler
        self._batch = batch_size
        self._claim_idle_ms = max(int(claim_idle_seconds * 1000), 1)
        self._claim_every = claim_idle_seconds / 2
        self._max_deliveries = max_deliveries
        self._dead_max_length = dead_max_length
        self._retry_max = retry_max_seconds
        self._database = Outage("Redis stream ingest: the database is")

    async def run(self) -> None:
        """Until cancelled: a lost connection is retried with capped backoff, logged once."""
        outage = Outage("Redis stream ingest: Redis is")
        backoff = Backoff(self._retry_max)
        while True:
            client = self._connect()
            try:
                await self._create_groups(client)
                outage.end()
                backoff.reset()
                await self._consume(client, backoff)
            except (RedisError, OSError) as exc:
                outage.begin(one_line(exc))
            except Exception:  # a bug: logged, and the loop goes on after the backoff
                log.exception("Redis stream ingest failed; starting again")
            finally:
                await client.aclose()
            await asyncio.sleep(backoff.next())

    async def _create_groups(self, client: Redis) -> None:
        for stream in self._streams:
            try:  # from the stream's start: what was added before the group existed counts too
                await client.xgroup_create(stream, self._group, id="0", mkstream=True)
                log.info("created consumer group %s on stream %s", self._group, stream)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _consume(self, client: Redis, backoff: Backoff) -> None:
        loop = asyncio.get_running_loop()
        next_claim = 0.0
        while True:
            if loop.time() >= next_claim:
                for stream in self._streams:
                    await self._claim(client, stream)
                next_claim = loop.time() + self._claim_every
            block = max(min(BLOCK_MS, int((next_claim - loop.time()) * 1000)), 1)
            reply = await client.xreadgroup(
                self._group,
                self.consumer,
                dict.fromkeys(self._streams, ">"),
                count=self._batch,
                block=block,
            )
            backoff.reset()  # Redis answers again
            for stream, entries in _by_stream(reply):
                for entry_id, fields in entries:
                    await self._process(client, stream, entry_id, fields, deliveries=1)

    async def _claim(self, client: Redis, stream: str) -> None:
        """Take over messages other consumers left pending too long (they died, most likely)."""
        start: bytes | str = "0-0"
        for _ in range(CLAIM_ROUNDS):
            reply = await client.xautoclaim(
                stream,
                self._group,
                self.consumer,
                min_idle_time=self._claim_idle_ms,
                start_id=start,
                count=self._batch,
            )
            start, entries = reply[0], [e for e in reply[1] if e is not None]
            if entries:
                counts = await self._deliveries(client, stream, [e[0] for e in entries])
                log.info(
                    "stream %s: claimed %d pending message(s) idle over %d ms",
                    stream, len(entries), self._claim_idle_ms,
                )  # fmt: skip
                for entry_id, fields in entries:
                    deliveries = counts.get(entry_id, 1)
                    await self._process(client, stream, entry_id, fields, deliveries=deliveries)
            if _text(start) == "0-0":
                return

    async def _deliveries(self, client: Redis, stream: str, ids: list[bytes]) -> dict[bytes, int]:
        """How often each claimed message was delivered, this claim included (XAUTOCLAIM
        answers in id order, so the first and last bound them)."""
        pending = await client.xpending_range(
            stream, self._group, min=ids[0], max=ids[-1], count=len(ids) + 100,
            consumername=self.consumer,
        )  # fmt: skip
        counts: dict[bytes, int] = {}
        for item in pending:
            counts[item["message_id"]] = int(item["times_delivered"])  # type: ignore[index]
        return counts

    async def _process(
        self,
        client: Redis,
        stream: str,
        entry_id: bytes,
        fields: dict[bytes, bytes] | None,
        *,
        deliveries: int,
    ) -> None:
        message_id = _text(entry_id)
        where = f"stream {stream} message {message_id}"
        if fields is None:  # deleted (XDEL) while pending
            await client.xack(stream, self._group, entry_id)
            return
        if deliveries > self._max_deliveries:
            reason = f"delivered {deliveries} times without being acknowledged"
            log.warning("%s: %s; moving it to %s%s", where, reason, stream, DEAD_SUFFIX)
            await self._dead(client, stream, entry_id, fields, reason, deliveries)
            return
        raw = fields.get(MESSAGE_FIELD)
        if raw is None:
            names = ", ".join(sorted(_text(name) for name in fields)) or "none"
            reason = f"no {_text(MESSAGE_FIELD)!r} field (fields: {names})"
            outcome = self._handler.reject("malformed", reason, where=where)
            self._handler.outcomes[("stream", "dropped")] += 1
        else:
            backoff = Backoff(self._retry_max)
            while True:
                try:
                    outcome = await self._handler.handle(
                        raw, transport="stream", name=stream, message_id=message_id
                    )
                except Exception:  # a bug: left pending, claimed again, dead after the limit
                    log.exception("%s could not be handled; left pending", where)
                    return
                if outcome.status != "retry":
                    self._database.end()
                    break
                # Kept here (not read again from Redis, which would count a delivery) until
                # the database answers; nothing else could be stored meanwhile either.
                self._database.begin(outcome.reason or "retry")
                await asyncio.sleep(backoff.next())
                await self._keep(client, stream, entry_id)
        if outcome.status == "dropped":
            await self._dead(client, stream, entry_id, fields, outcome.reason or "", deliveries)
        else:  # committed now or before: done
            await client.xack(stream, self._group, entry_id)

    async def _keep(self, client: Redis, stream: str, entry_id: bytes) -> None:
        """Reset the message's idle time, so no other consumer claims one this process is still
        trying (JUSTID: not counted as a delivery)."""
        await client.xclaim(
            stream, self._group, self.consumer, min_idle_time=0, message_ids=[entry_id],
            justid=True,
        )  # fmt: skip

    async def _dead(
        self,
        client: Redis,
        stream: str,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        reason: str,
        deliveries: int,
    ) -> None:
        """Move a message that can never succeed to `<stream>.dead`, with why; then ack it."""
        dead: dict[Any, Any] = {
            **fields,
            b"reason": reason,
            b"original_id": entry_id,
            b"deliveries": str(deliveries),
        }
        async with client.pipeline(transaction=True) as pipe:
            pipe.xadd(stream + DEAD_SUFFIX, dead, maxlen=self._dead_max_length, approximate=True)
            pipe.xack(stream, self._group, entry_id)
            await pipe.execute()
        self._handler.dead_lettered += 1
        log.info("stream %s message %s moved to %s%s", stream, _text(entry_id), stream, DEAD_SUFFIX)


def _by_stream(reply: Any) -> list[tuple[str, list[Entry]]]:
    """XREADGROUP's answer: [[stream, [(id, fields), ...]], ...], or None when it timed out."""
    return [(_text(stream), list(entries)) for stream, entries in reply or []]
