"""The one place the Redis ingest opens its client (redis://, rediss:// or Redis Sentinel)."""

from __future__ import annotations

from redis.asyncio import Redis

from ..redis_url import open_redis

# XREADGROUP blocks this long; the socket waits longer, so a quiet stream is no timeout.
BLOCK_MS = 2000


def redis_client(url: str) -> Redis:
    """A client for INGEST_REDIS_URL (or REDIS_URL): bounded connect, reads outlast BLOCK_MS."""
    return open_redis(
        url, socket_connect_timeout=3, socket_timeout=BLOCK_MS / 1000 + 10, health_check_interval=30
    )
