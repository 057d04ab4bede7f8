"""Cluster-wide stats: each process publishes its own to Redis with a TTL; any process sums them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

log = logging.getLogger(__name__)
KEY_PREFIX = "notify:stats:"
PUBLISH_INTERVAL = 5.0
SUMMED = ("connections", "online_users", "events_in", "events_out", "total_connections")


class ClusterStats:
    def __init__(self, *, local: Callable[[], dict[str, Any]], process_id: str) -> None:
        self._local = local
        self._process_id = process_id
        self._redis: Redis | None = None

    def use_redis(self, redis: Redis) -> None:
        self._redis = redis

    async def publish(self) -> None:
        if self._redis is None:
            return
        snapshot = {**self._local(), "process": self._process_id}
        await self._redis.set(
            KEY_PREFIX + self._process_id, json.dumps(snapshot), ex=int(PUBLISH_INTERVAL * 3)
        )

    async def withdraw(self) -> None:
        """On a clean shutdown, leave the cluster's stats at once rather than at the TTL."""
        if self._redis is not None:
            await self._redis.delete(KEY_PREFIX + self._process_id)

    async def collect(self) -> dict[str, Any]:
        """This process's stats, plus every other live process's when Redis is configured.

        online_users is summed per process: a user connected to two processes counts twice.
        """
        mine = {**self._local(), "process": self._process_id}
        if self._redis is None:
            return {**mine, "processes": [mine["process"]]}
        await self.publish()
        keys = [key async for key in self._redis.scan_iter(match=KEY_PREFIX + "*", count=100)]
        values = await self._redis.mget(keys) if keys else []
        snapshots = [json.loads(value) for value in values if value]
        return merge(snapshots)

    async def run(self) -> None:
        while True:
            try:
                await self.publish()
            except Exception as exc:  # Redis down: readiness reports it; keep trying
                log.warning("could not publish stats to Redis: %r", exc)
            await asyncio.sleep(PUBLISH_INTERVAL)


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {name: sum(s.get(name, 0) for s in snapshots) for name in SUMMED}
    rooms: Counter[str] = Counter()
    transports: Counter[str] = Counter()
    for snapshot in snapshots:
        rooms.update(snapshot.get("rooms", {}))
        transports.update(snapshot.get("transports", {}))
    total["rooms"] = dict(sorted(rooms.items()))
    total["transports"] = dict(transports)
    total["uptime_seconds"] = max((s.get("uptime_seconds", 0) for s in snapshots), default=0)
    total["processes"] = sorted(s["process"] for s in snapshots)
    total["process"] = "cluster"
    return total
