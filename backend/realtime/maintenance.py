"""Background upkeep: disconnect stale sessions, log a stats line; both on intervals."""

from __future__ import annotations

import asyncio
import json
import logging

import socketio

from .cluster import Cluster
from .connections import ConnectionManager

log = logging.getLogger(__name__)


async def cleanup_stale(
    sio: socketio.AsyncServer,
    connections: ConnectionManager,
    timeout_seconds: float,
    cluster: Cluster | None = None,
) -> list[str]:
    """Really disconnect every session silent for longer than the timeout; return their sids.

    With `cluster`, also the other processes' sessions: each leaves the view at once and its
    process disconnects it (told over pub/sub, and on its next beat if that was missed)."""
    stale = [connection.sid for connection in connections.stale_sessions(timeout_seconds)]
    streams = sio.manager.delivery.streams
    for sid in stale:
        stream = streams.get(sid)
        if stream is not None:  # a Server-Sent Events stream: ended by its own writer
            stream.close("stale")
        else:
            await sio.disconnect(sid)
        connections.disconnect(sid)  # also when the transport was already gone
    if cluster is not None and cluster.enabled:
        for sid, _process in await cluster.stale(timeout_seconds):
            if await cluster.evict(sid, "stale") is not None:
                await sio.disconnect(sid)  # a remote sid: published to its process
                stale.append(sid)
    if stale:
        log.info("cleaned %d stale sessions", len(stale))
    return stale


async def disconnect_user(
    sio: socketio.AsyncServer, connections: ConnectionManager, cluster: Cluster, user_id: str
) -> int:
    """Disconnect every session of the user, on every process (an erased user), as the cleanup
    does: this process's at once, another's through the cluster view and its process."""
    done: set[str] = set()
    streams = sio.manager.delivery.streams
    for connection in connections.user_sessions(user_id):
        stream = streams.get(connection.sid)
        if stream is not None:  # a Server-Sent Events stream: ended by its own writer
            stream.close("erased")
        else:
            await sio.disconnect(connection.sid)
        connections.disconnect(connection.sid)
        done.add(connection.sid)
    if cluster.enabled:
        for session in await cluster.user_sessions(user_id):
            sid = session["sid"]
            if sid not in done and await cluster.evict(sid, "erased") is not None:
                await sio.disconnect(sid)  # a remote sid: published to its process
                done.add(sid)
    return len(done)


async def cleanup_loop(
    sio: socketio.AsyncServer,
    connections: ConnectionManager,
    *,
    interval_seconds: float,
    timeout_seconds: float,
) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await cleanup_stale(sio, connections, timeout_seconds)
        except Exception:
            log.exception("stale-session cleanup failed; trying again next interval")


async def stats_loop(connections: ConnectionManager, *, interval_seconds: float) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        stats = connections.stats()
        stats.pop("rooms")
        log.info("stats %s", json.dumps(stats, sort_keys=True))
