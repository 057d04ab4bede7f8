"""The cluster-wide view of sessions, kept in Redis: exact when asked, and a crashed process's
sessions leave it by themselves.

Each process mirrors its ConnectionManager into Redis (one script per change, in order, in
pipelined batches from one writer task) and beats every TTL/5: the beat renews its deadline,
flushes the last-event times of its sessions and takes the sessions other processes evicted
from it. Every read reaps the processes whose deadline passed first. With Redis away, the
process keeps serving on its own view and cap, logs it once, and writes its sessions again
when Redis is back. Without REDIS_URL everything is this process's ConnectionManager.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from ..errors import DomainError
from . import cluster_scripts as lua
from .connections import ClientConnection, ConnectionManager

log = logging.getLogger(__name__)
# How long a stopping writer may take to finish what it is sending.
STOP_WAIT_SECONDS = 2.0
# A connect waits at most this long for Redis to admit it, then goes on with the local cap.
ADMIT_WAIT_SECONDS = 2.0
RESYNC_CHUNK = 500

Evicted = Callable[[str, str], Awaitable[None]]


class ClusterUnavailable(DomainError):
    code = "unavailable"
    status = 503


@dataclass
class _Op:
    script: str
    args: list[Any]
    future: asyncio.Future[Any] | None = None


@dataclass
class _State:
    ops: list[_Op] = field(default_factory=list)
    touched: dict[str, float] = field(default_factory=dict)
    admissions: dict[str, asyncio.Future[Any]] = field(default_factory=dict)


class Cluster:
    """The view for the cluster: `stats`, `user_sessions` (online: any), `stale`, `evict`."""

    def __init__(
        self,
        *,
        connections: ConnectionManager,
        process_id: str,
        local: Callable[[], dict[str, Any]],
        counters: Callable[[], dict[str, Any]] | None = None,
        ttl_seconds: float = 10.0,
        max_per_user: int = 5,
    ) -> None:
        self.connections = connections
        self.process_id = process_id
        self._local = local
        # what each beat sends: the running counters only (`local` walks every room)
        self._local_counters = counters or local
        self.ttl_seconds = ttl_seconds
        self.max_per_user = max_per_user
        self.on_evicted: Evicted | None = None
        self._redis: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._state = _State()
        self._wake = asyncio.Event()
        self._stopping = False
        self._resync_due = True  # the first write says who we are, with what we hold
        self._failing = False

    @property
    def enabled(self) -> bool:
        return self._redis is not None

    def use_redis(self, redis: Redis) -> None:
        self._redis = redis
        self._scripts = {
            name: redis.register_script(getattr(lua, name))
            for name in ("ADMIT", "REMOVE", "REPLACE", "EVICT", "HEARTBEAT", "RESYNC", "LEAVE")
            + ("STATS", "USER", "STALE")
        }
        self.connections.mirror = self

    # -- the mirror (called synchronously by ConnectionManager) -----------------------------

    def _queue(self, script: str, *args: Any, future: asyncio.Future[Any] | None = None) -> None:
        if self._resync_due:
            if future is not None:
                future.set_result([])  # the resync will write it; the local cap holds meanwhile
            return
        self._state.ops.append(_Op(script, list(args), future))
        self._wake.set()

    def _session_json(self, connection: ClientConnection) -> str:
        return json.dumps({**connection.as_dict(), "process": self.process_id})

    def added(self, connection: ClientConnection) -> None:
        future = asyncio.get_running_loop().create_future()
        self._state.admissions[connection.sid] = future
        ttl_ms = int(self.ttl_seconds * 1000)
        self._queue(
            "ADMIT", ttl_ms, self.max_per_user, self._session_json(connection), future=future
        )

    def removed(self, connection: ClientConnection) -> None:
        self._state.admissions.pop(connection.sid, None)
        self._state.touched.pop(connection.sid, None)
        self._queue("REMOVE", connection.sid)

    def changed(self, connection: ClientConnection) -> None:
        self._queue("REPLACE", self._session_json(connection))

    def touched(self, connection: ClientConnection) -> None:
        self._state.touched[connection.sid] = connection.last_heartbeat

    async def admission(self, sid: str) -> list[tuple[str, str]]:
        """The sessions (sid, process) this connect displaced across the cluster, oldest first;
        none when Redis is not configured or does not answer in time."""
        future = self._state.admissions.pop(sid, None)
        if future is None:
            return []
        try:
            async with asyncio.timeout(ADMIT_WAIT_SECONDS):
                flat = await asyncio.shield(future)
        except TimeoutError:
            return []
        return _pairs(flat)

    # -- the writer and the beat ------------------------------------------------------------

    async def run(self) -> None:
        """The writer and the beat, until cancelled."""
        writer = asyncio.create_task(self._write_loop(), name="cluster-writer")
        try:
            while True:
                await self._beat()
                await asyncio.sleep(self.ttl_seconds / 5)
        finally:
            # The flag as well as the cancel: a cancellation swallowed inside the Redis client
            # (seen in a pipeline cut short at shutdown) left the writer waiting on its event
            # for ever, and the shutdown with it.
            self._stopping = True
            self._wake.set()
            writer.cancel()
            await asyncio.wait([writer], timeout=STOP_WAIT_SECONDS)

    async def _beat(self) -> None:
        if self._resync_due:
            self._wake.set()
            return
        touched, self._state.touched = self._state.touched, {}
        pairs = [item for sid_time in touched.items() for item in sid_time]
        future = asyncio.get_running_loop().create_future()
        ttl_ms = int(self.ttl_seconds * 1000)
        self._queue("HEARTBEAT", self.process_id, ttl_ms, self._counters(), *pairs, future=future)
        result = await future
        if not result:
            return
        known, evicted = result
        if not known:
            log.warning("cluster view: this process's sessions were gone from Redis; writing again")
            self._resync_due = True
            self._wake.set()
        for entry in evicted:
            sid, _, reason = (entry.decode() if isinstance(entry, bytes) else entry).partition(" ")
            if self.on_evicted is not None:
                await self.on_evicted(sid, reason)

    def _counters(self) -> str:
        local = self._local_counters()
        fields = ("events_in", "events_out", "total_connections", "uptime_seconds")
        return json.dumps({name: local.get(name, 0) for name in fields})

    async def _write_loop(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            while self._state.ops or self._resync_due:
                await self._flush()
                if self._failing:
                    break  # the next beat tries again

    async def _flush(self) -> None:
        assert self._redis is not None
        resync = self._resync_due
        ops, self._state.ops = self._state.ops, []
        if resync:
            for op in ops:  # the snapshot below holds what they would have written
                if op.future is not None and not op.future.done():
                    op.future.set_result([])
            ops = self._resync_ops()
            self._resync_due = False  # changes from now on are queued after the snapshot
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for op in ops:
                    await self._scripts[op.script](args=op.args, client=pipe)
                results = await pipe.execute()
        except Exception as exc:
            if not self._failing:
                log.warning(
                    "cluster view unavailable (Redis: %s); sessions are counted and capped on "
                    "each process until it returns",
                    f"{type(exc).__name__}: {exc}"[:200],
                )
            self._failing = self._resync_due = True
            for op in ops:  # a connect goes on with the local cap
                if op.future is not None and not op.future.done():
                    op.future.set_result([])
            return
        if resync:
            if self._failing:
                log.warning("cluster view restored: this process's sessions written to Redis")
            self._failing = False
        for op, result in zip(ops, results, strict=True):
            if op.future is not None and not op.future.done():
                op.future.set_result(result)

    def _resync_ops(self) -> list[_Op]:
        ttl_ms = int(self.ttl_seconds * 1000)
        sessions = sorted(self.connections.all(), key=lambda c: c.order)
        chunks = [sessions[i : i + RESYNC_CHUNK] for i in range(0, len(sessions), RESYNC_CHUNK)]
        self._state.touched.clear()
        head = [self.process_id, ttl_ms, self._counters()]
        return [
            _Op("RESYNC", [*head, "1" if index == 0 else "0", *map(self._session_json, chunk)])
            for index, chunk in enumerate(chunks or [[]])
        ]

    async def leave(self) -> None:
        """On a clean shutdown, leave the view at once rather than at the deadline."""
        if self._redis is not None:
            self.connections.mirror = None
            with contextlib.suppress(Exception):  # Redis may be the thing that is down
                await self._scripts["LEAVE"](args=[self.process_id])

    # -- reads ------------------------------------------------------------------------------

    async def _read(self, script: str, *args: Any) -> Any:
        try:
            return await self._scripts[script](args=list(args))
        except Exception as exc:
            raise ClusterUnavailable(
                f"the cluster view is unavailable: Redis: {type(exc).__name__}"
            ) from None

    async def stats(self) -> dict[str, Any]:
        """Connections, online users (each once), rooms and transports as they are now;
        counters summed from each process's last beat (this one's are current)."""
        mine = self._local()
        if self._redis is None:
            return {**mine, "process": self.process_id, "processes": [self.process_id]}
        flat = await self._read("STATS")
        connections, online, rooms, transports, *procs = flat
        counters = {_text(pid): json.loads(raw) for pid, raw in _pairs(procs)}
        counters[self.process_id] = mine
        live = sorted(counters)
        total = {
            name: sum(c.get(name, 0) for c in counters.values())
            for name in ("events_in", "events_out", "total_connections")
        }
        return {
            "connections": int(connections),
            "online_users": int(online),
            "rooms": dict(sorted((k, int(v)) for k, v in _pairs(rooms))),
            "transports": {k: int(v) for k, v in _pairs(transports)},
            **total,
            "uptime_seconds": max(c.get("uptime_seconds", 0) for c in counters.values()),
            "process": self.process_id,
            "processes": live,
        }

    async def user_sessions(self, user_id: str) -> list[dict[str, Any]]:
        """The user's sessions on every live process, oldest admission first."""
        if self._redis is None:
            return [c.as_dict() for c in self.connections.user_sessions(user_id)]
        flat = await self._read("USER", user_id)
        sessions = []
        for raw, seen in _pairs(flat, raw=True):
            session = json.loads(raw)
            local = self.connections.get(session["sid"])
            if local is not None:
                session = local.as_dict()  # this process's own are exact
            else:
                session["last_heartbeat"] = float(seen)
            session.pop("process", None)
            sessions.append(session)
        return sessions

    async def stale(self, timeout_seconds: float) -> list[tuple[str, str]]:
        """(sid, process) of the sessions of other processes silent for longer than the timeout,
        as of their processes' last beat."""
        if self._redis is None:
            return []
        cutoff = time.time() - timeout_seconds
        flat = await self._read("STALE", repr(cutoff))
        return [(sid, pid) for sid, pid in _pairs(flat) if pid != self.process_id]

    async def evict(self, sid: str, reason: str) -> str | None:
        """Take a session of another process out of the view now, and queue it for its
        process (which also hears of it over pub/sub); returns that process."""
        process = await self._read("EVICT", sid, reason)
        return _text(process) if process else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: Any, *, raw: bool = False) -> list[tuple[Any, Any]]:
    items = list(flat or [])
    if not raw:
        items = [_text(item) for item in items]
    return list(zip(items[::2], items[1::2], strict=True))
