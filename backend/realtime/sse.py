"""Server-Sent Events: a stream is one more session of the Socket.IO manager, fed by the same
delivery path (rooms, recovery holds, outbound buckets, `missed` coalescing, Redis fan-out);
only the last step differs: frames go to the stream's bounded queue instead of a socket."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import socketio

from ..db import RETRY_AFTER_SECONDS, is_unavailable
from .connections import SSE, ConnectionManager
from .delivery import NOTIFICATION, DeliveryControl
from .notifier import user_room
from .recovery import Recovery

log = logging.getLogger(__name__)
NAMESPACE = "/"
PING = b": ping\n\n"
OPENED = b": stream open\n\n"
# How often a quiet stream looks whether its client went away (aiohttp does not say).
LIVENESS_CHECK_SECONDS = 1.0
DISPLACED = "too many streams for this user; the oldest stream was closed"


def encode_event(event: str, data: Any) -> bytes:
    """One SSE event; a notification carries its seq as the id EventSource resumes from."""
    body = orjson.dumps(data, default=str)  # one line: JSON escapes every newline
    frame = b"event: " + event.encode() + b"\n"
    if event == NOTIFICATION and isinstance(data, dict) and isinstance(data.get("seq"), int):
        frame += b"id: %d\n" % data["seq"]
    return frame + b"data: " + body + b"\n\n"


class SseStream:
    """One open stream: what delivery hands it waits here for the response's writer."""

    def __init__(self, sid: str, user_id: str, *, max_queued: int) -> None:
        self.sid = sid
        self.user_id = user_id
        self._max = max_queued
        self._queue: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self.closed: str | None = None  # the reason, once closed
        self.farewell: bytes = b""  # a last event for the client, written before the end

    def send(self, messages: list[tuple[str, Any]]) -> None:
        """Called by delivery, never awaits. A reader this far behind is dropped, not buffered:
        memory stays bounded, and its EventSource resumes by Last-Event-ID on reconnect."""
        if self.closed is not None:
            return
        if len(self._queue) + len(messages) > self._max:
            self.close(f"the reader fell more than {self._max} events behind")
            return
        for event, data in messages:
            if "\n" in event or "\r" in event:
                continue
            self._queue.append(encode_event(event, data))
        self._wake.set()

    def close(self, reason: str, *, farewell: tuple[str, Any] | None = None) -> None:
        if self.closed is None:
            self.closed = reason
            if farewell is not None:
                self.farewell = encode_event(*farewell)
            self._queue.clear()
            self._wake.set()

    async def take(self, timeout: float) -> bytes:
        """What is queued, waiting up to `timeout` for something."""
        if not self._queue and self.closed is None:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
        self._wake.clear()
        frames = b"".join(self._queue)
        self._queue.clear()
        return frames


class StreamHub:
    """Opens streams as manager sessions and closes them; counts them in the ConnectionManager
    with transport "sse"; caps them per user, the oldest closed first."""

    def __init__(
        self,
        *,
        sio: socketio.AsyncServer,
        connections: ConnectionManager,
        control: DeliveryControl,
        max_per_user: int,
        max_queued: int,
        heartbeat_seconds: float,
    ) -> None:
        self._sio = sio
        self._connections = connections
        self._control = control
        self._max_per_user = max_per_user
        self._max_queued = max_queued
        self._heartbeat = heartbeat_seconds
        self._streams: dict[str, SseStream] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def open(
        self,
        user_id: str,
        *,
        hold: bool,
        remote_address: str | None = None,
        user_agent: str | None = None,
    ) -> SseStream:
        """Registered and in the user's room before returning, with no await in between: the
        per-user cap holds however many opens interleave, and, held for recovery, nothing
        live slips past it."""
        sid = f"sse-{uuid.uuid4().hex}"
        displaced = self._connections.admit(
            sid,
            user_id,
            limit=self._max_per_user,
            transport=SSE,
            remote_address=remote_address,
            user_agent=user_agent,
        )
        for old in displaced:
            self.close(old.sid, DISPLACED, farewell=("session_closed", {"reason": DISPLACED}))
        connection = self._connections.get(sid)
        assert connection is not None
        connection.live = True
        stream = self._streams[sid] = SseStream(sid, user_id, max_queued=self._max_queued)
        self._control.streams[sid] = stream
        if hold:
            self._control.hold(sid)
        manager = self._sio.manager
        if not self._sio.manager_initialized:
            # python-socketio starts its manager (the Redis listener) on the first Engine.IO
            # connect; a process whose only clients are streams must start it too.
            self._sio.manager_initialized = True
            manager.initialize()
        # The sid doubles as its own "Engine.IO id": unique, and never a real socket's.
        for room in (None, sid, user_room(user_id)):
            manager.basic_enter_room(sid, NAMESPACE, room, eio_sid=sid)
        return stream

    def close(self, sid: str, reason: str, *, farewell: tuple[str, Any] | None = None) -> bool:
        """Out of every room at once; the stream's writer ends the response. False if no such
        stream (a socket's sid, or already closed)."""
        stream = self._streams.pop(sid, None)
        if stream is None:
            return False
        stream.close(reason, farewell=farewell)
        self._control.streams.pop(sid, None)
        self._sio.manager.basic_disconnect(sid, NAMESPACE)
        self._connections.disconnect(sid)
        self._control.forget(sid)
        return True

    def close_all(self, reason: str) -> None:
        for sid in list(self._streams):
            self.close(sid, reason)

    async def pump(
        self,
        stream: SseStream,
        write: Callable[[bytes], Awaitable[None]],
        client_gone: Callable[[], bool],
    ) -> None:
        """Write the stream until it is closed or its client leaves; a ping comment every
        heartbeat, which also counts as the session's heartbeat against stale cleanup."""
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self._heartbeat
        try:
            await write(OPENED)
            while stream.closed is None:
                wait = min(LIVENESS_CHECK_SECONDS, max(next_ping - loop.time(), 0))
                frames = await stream.take(wait)
                if frames:
                    await write(frames)
                if stream.closed is not None or client_gone():
                    break
                if loop.time() >= next_ping:
                    await write(PING)
                    self._connections.heartbeat(stream.sid)
                    next_ping = loop.time() + self._heartbeat
            if stream.farewell:
                await write(stream.farewell)
        except ConnectionError:
            pass  # the client went away mid-write
        finally:
            log.debug("stream %s ended: %s", stream.sid, stream.closed or "client gone")
            self.close(stream.sid, stream.closed or "client gone")

    async def recover(self, stream: SseStream, recovery: Recovery, after_seq: int) -> None:
        """Last-Event-ID: what the stream missed, once, in seq order, then live; the outcome as
        a `recovery` event, as on the socket. The database away: the stream ends, and the
        client's reconnect (EventSource's own, with the same Last-Event-ID) tries again."""
        try:
            result = await recovery.recover(stream.sid, stream.user_id, after_seq)
        except Exception as exc:
            if not is_unavailable(exc):
                log.exception("recovery failed for %s", stream.sid)
                failed = {"recovered": False, "count": 0, "last_seq": after_seq}
                stream.send([("recovery", {**failed, "reason": "recovery failed"})])
                return
            deferred = {
                "recovered": False,
                "retry": True,
                "reason": "database unavailable",
                "retry_after": RETRY_AFTER_SECONDS,
                "count": 0,
                "last_seq": after_seq,
            }
            self.close(stream.sid, "database unavailable", farewell=("recovery", deferred))
            return
        stream.send([("recovery", result.as_dict())])
