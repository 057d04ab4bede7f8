"""Redis pub/sub: each message on INGEST_REDIS_CHANNELS becomes notifications, fire-and-forget.

Every subscriber of a channel receives every message, so one process of the cluster consumes
each channel at a time: the holder of a lease in Redis (`notify:ingest:channel:<name>`, the
process id as its value), taken with `SET NX PX`, renewed every third of it with a
compare-and-pexpire, released with a compare-and-delete on a clean stop. The others do not
subscribe; they try to take the lease as often as the holder renews it.

Pub/sub keeps nothing: what is published while no process listens (the holder reconnecting, or
dead and its lease not yet expired) is gone. Streams (streams.py) are the durable way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..logs import one_line
from .messages import Backoff, MessageHandler, Outage

log = logging.getLogger(__name__)

# get_message waits this long at most, so the connection's health check runs on quiet channels.
POLL_SECONDS = 5.0
# A clean stop releases the lease within this, or leaves it to expire.
RELEASE_TIMEOUT_SECONDS = 1.0

LEASE_KEY = "notify:ingest:channel:{}"

# Mine already (a holder reconnecting) or free: take it. 1 when held by ARGV[1] now.
_ACQUIRE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""
# Only the holder extends or deletes its lease.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""

_REDIS_ERRORS = (RedisError, OSError, TimeoutError)


def lease_key(channel: str) -> str:
    return LEASE_KEY.format(channel)


class _Lease:
    """What the holder knows of its lease: valid until `until` (monotonic), measured from before
    the command that set it, so never later than Redis's own expiry."""

    def __init__(self, until: float) -> None:
        self.until = until
        self.lost = False
        self._changed = asyncio.Event()

    def renewed(self, until: float) -> None:
        self.until = until
        self._changed.set()

    def lose(self) -> None:
        self.lost = True
        self._changed.set()

    async def valid(self) -> bool:
        """True while the lease is surely held; when it may have lapsed (the event loop was held
        up past it), waits for the keeper's verdict. False once another process took it."""
        while not self.lost and time.monotonic() >= self.until:
            self._changed.clear()
            await self._changed.wait()
        return not self.lost


class ChannelSubscriber:
    """Per channel: holds its lease or waits for it; the holder subscribes and hands each
    message to the handler. Reconnects by itself."""

    def __init__(
        self,
        *,
        connect: Callable[[], Redis],
        channels: Sequence[str],
        handler: MessageHandler,
        retry_max_seconds: float,
        process_id: str,
        lease_seconds: float,
    ) -> None:
        self._connect = connect
        self._channels = list(channels)
        self._handler = handler
        self._retry_max = retry_max_seconds
        self._process_id = process_id
        self._lease_seconds = lease_seconds
        self._lease_ms = max(int(lease_seconds * 1000), 1)
        self._period = lease_seconds / 3
        self._database = Outage("Redis channel ingest: the database is")
        # channels this process consumes now (read by tests and logs)
        self.leading: set[str] = set()

    async def run(self) -> None:
        """Until cancelled; cancelling stops consuming, then releases the leases held."""
        async with asyncio.TaskGroup() as group:
            for name in self._channels:
                group.create_task(self._channel(name), name=f"redis-channel:{name}")

    async def _channel(self, name: str) -> None:
        """A lost connection is retried with capped backoff, logged once."""
        outage = Outage(f"Redis channel ingest ({name}): Redis is")
        backoff = Backoff(self._retry_max)
        key = lease_key(name)
        args = (self._process_id, self._lease_ms)
        while True:
            client = self._connect()
            acquire = client.register_script(_ACQUIRE)
            try:
                while True:
                    started = time.monotonic()
                    async with asyncio.timeout(self._period):
                        taken = await acquire(keys=[key], args=args)
                    outage.end()
                    backoff.reset()
                    if taken:
                        await self._hold(client, name, _Lease(started + self._lease_seconds))
                    else:
                        await asyncio.sleep(self._period)
            except _REDIS_ERRORS as exc:
                outage.begin(one_line(exc))
            except Exception:  # a bug: logged, and the loop goes on after the backoff
                log.exception("Redis channel ingest failed on %s; starting again", name)
            finally:
                await client.aclose()
            await asyncio.sleep(backoff.next())

    async def _hold(self, client: Redis, name: str, lease: _Lease) -> None:
        """Consumes while the lease is renewed; returns when another process took it, raises
        when Redis is away for longer than the lease may still run. Always stops consuming
        first, then releases the lease if it is still this process's."""
        self.leading.add(name)
        consumer = asyncio.create_task(self._consume(client, name, lease))
        try:
            await self._keep(client, name, lease, consumer)
        finally:
            self.leading.discard(name)
            if lease.lost and not consumer.done():
                # Lost, not stopping: finish the message in hand (received while holding).
                with contextlib.suppress(Exception):
                    await consumer
            else:
                consumer.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await consumer
            await self._release(client, name)

    async def _keep(
        self, client: Redis, name: str, lease: _Lease, consumer: asyncio.Task[None]
    ) -> None:
        renew = client.register_script(_RENEW)
        key = lease_key(name)
        while True:
            done, _ = await asyncio.wait([consumer], timeout=self._period)
            if done:
                consumer.result()  # its Redis error ends the hold; it never returns otherwise
                return
            started = time.monotonic()
            try:
                async with asyncio.timeout(self._period):
                    renewed = await renew(keys=[key], args=[self._process_id, self._lease_ms])
            except _REDIS_ERRORS:
                if time.monotonic() + self._period >= lease.until:
                    raise  # no later try could come before the lease ends: stop now
                continue
            if not renewed:
                log.warning("Redis channel %s: another process took its lease; unsubscribing", name)
                lease.lose()
                return
            lease.renewed(started + self._lease_seconds)

    async def _consume(self, client: Redis, name: str, lease: _Lease) -> None:
        async with client.pubsub() as pubsub:
            await pubsub.subscribe(name)
            log.info("subscribed to Redis channel %s (this process holds its lease)", name)
            while not lease.lost:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=min(POLL_SECONDS, self._period)
                )
                # A message that came while the lease may have lapsed and was then taken by
                # another process is not this one's (the other may have it too): skipped.
                if message is not None and message["type"] == "message" and await lease.valid():
                    await self._deliver(message["channel"], message["data"])

    async def _release(self, client: Redis, name: str) -> None:
        """Compare-and-delete, so another process takes over at once; bounded, best effort."""
        release = client.register_script(_RELEASE)
        with contextlib.suppress(*_REDIS_ERRORS):
            async with asyncio.timeout(RELEASE_TIMEOUT_SECONDS):
                await release(keys=[lease_key(name)], args=[self._process_id])

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
