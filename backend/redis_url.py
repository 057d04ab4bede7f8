"""One REDIS_URL for every Redis client: redis://, rediss:// and redis+sentinel:// (Sentinel).

python-socketio's AsyncRedisManager reads the same URL (its `parse_redis_sentinel_url`); the
clients we open for readiness and shared state parse it with that very function, so the manager
and our clients always reach the same primary, also after a Sentinel failover.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel
from socketio.redis_manager import parse_redis_sentinel_url

SCHEMES = ("redis", "rediss", "redis+sentinel")


def url_problem(url: str) -> str | None:
    """Why this REDIS_URL cannot work, in a few words; None when it can."""
    scheme = urlparse(url).scheme
    if scheme not in SCHEMES:
        return "must start with redis://, rediss:// or redis+sentinel://"
    if scheme != "redis+sentinel":
        return None
    try:
        sentinels, service, _ = parse_redis_sentinel_url(url)
    except ValueError:
        return "must be redis+sentinel://[:password@]host:port[,host:port...]/db/service"
    if not all(host for host, _ in sentinels):
        return "names a sentinel without a host"
    if not service:
        # python-socketio would fall back to its channel's name: always say which primary
        return "must name the Sentinel service: redis+sentinel://host:port[,...]/db/service"
    return None


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    credentials, _, hosts = parts.netloc.rpartition("@")
    user = credentials.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))


class SentinelRedis(Redis):
    """The primary a set of sentinels names, found again after a failover; closing it closes
    the connections to the sentinels too."""

    sentinel_manager: Sentinel

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for each in self.sentinel_manager.sentinels:
            await each.aclose()


def open_redis(url: str, **options: Any) -> Redis:
    """A redis-py asyncio client for REDIS_URL; `options` go to every connection it opens."""
    if urlparse(url).scheme != "redis+sentinel":
        return Redis.from_url(url, **options)
    sentinels, service, connection = parse_redis_sentinel_url(url)
    # As python-socketio does: the URL's db and password are the primary's; the socket
    # options reach the sentinels too (redis-py copies socket_* into sentinel_kwargs).
    sentinel = Sentinel(sentinels, **{**options, **connection})
    client = sentinel.master_for(service, redis_class=SentinelRedis)
    client.sentinel_manager = sentinel
    return client
