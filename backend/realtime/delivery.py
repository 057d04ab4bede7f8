"""Delivery control inside the Socket.IO client manager: hold, rate-limit and fan out.

Every local delivery passes through `DeliveryMixin.emit`, also the ones that arrive from other
processes over Redis, so holding a session's live notifications during its recovery and capping
its outbound rate work the same on one process or many.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson
import socketio
from engineio import packet as eio_packet
from socketio import packet

from .fast import text_frame, write_now
from .limits import TokenBucket

NOTIFICATION = "notification"


class StreamSink(Protocol):
    """A session with no Engine.IO socket (a Server-Sent Events stream): delivery hands it the
    (event, data) pairs that passed the hold and the outbound bucket, in order."""

    def send(self, messages: list[tuple[str, Any]]) -> None: ...


class DeliveryControl:
    """Per-session delivery state: recovery holds, outbound buckets, coalesced counts."""

    def __init__(
        self, *, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.holding: dict[str, list[Any]] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self.missed: dict[str, int] = {}
        self.last_unread: dict[str, Any] = {}
        self.events_out = 0
        self.direct_writes = 0  # writes straight to a socket (fast.write_now), one per session
        # sid -> the stream that takes that session's deliveries instead of a socket (sse.py)
        self.streams: dict[str, StreamSink] = {}

    def hold(self, sid: str) -> None:
        self.holding.setdefault(sid, [])

    def take_held(self, sid: str) -> list[Any]:
        """Swap out what was held so far; the session stays held."""
        held = self.holding.get(sid, [])
        if held:
            self.holding[sid] = []
        return held

    def release(self, sid: str) -> list[Any]:
        return self.holding.pop(sid, [])

    def admit(self, sid: str) -> bool:
        bucket = self.buckets.get(sid)
        if bucket is None:
            bucket = self.buckets[sid] = TokenBucket(self.rate, self.burst, clock=self.clock)
        return bucket.take()

    def forget(self, sid: str) -> None:
        self.holding.pop(sid, None)
        self.buckets.pop(sid, None)
        self.missed.pop(sid, None)


class DeliveryMixin(socketio.AsyncManager):
    """Encodes a packet once per emit and writes it to each recipient without a task each.

    It also keeps an index of each session's rooms, so a disconnect costs the rooms the session
    is in rather than a scan of every room on the server (python-socketio's own way, which made
    a disconnect storm at 10k connections quadratic).
    """

    delivery: DeliveryControl
    _session_rooms: dict[tuple[str, str], set[Any]]

    # -- the room index --------------------------------------------------------------------

    def _rooms_of(self, sid: str, namespace: str) -> set[Any]:
        index = self.__dict__.get("_session_rooms")
        if index is None:
            index = self._session_rooms = {}
        key = (namespace, sid)
        rooms = index.get(key)
        if rooms is None:
            rooms = index[key] = set()
        return rooms

    def basic_enter_room(
        self, sid: str, namespace: str, room: Any, eio_sid: str | None = None
    ) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self._rooms_of(sid, namespace).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)
        rooms = self.__dict__.get("_session_rooms", {}).get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)

    def basic_disconnect(self, sid: str, namespace: str, **_kwargs: Any) -> None:
        rooms = self.__dict__.get("_session_rooms", {}).pop((namespace, sid), set())
        if namespace in self.rooms:
            # Named rooms first, the session's own and the namespace's `None` room last.
            for room in sorted(rooms - {None, sid}, key=str):
                super().basic_leave_room(sid, namespace, room)
            for room in (sid, None):
                if room in rooms:
                    super().basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        rooms = self.__dict__.get("_session_rooms", {}).get((namespace, sid), set())
        return [room for room in rooms if room is not None]

    # -- emitting --------------------------------------------------------------------------

    async def emit(  # type: ignore[override]
        self,
        event: str,
        data: Any,
        namespace: str,
        room: str | None = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: str | None = None,
        **kwargs: Any,
    ) -> None:
        room = to or room
        if callback is not None or namespace not in self.rooms:
            await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs
            )
            return
        skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        await self._deliver([(event, data)], namespace, room, skip)

    async def emit_each(
        self, items: list[tuple[str, list[tuple[str, Any]]]], namespace: str
    ) -> None:
        """Events to many rooms, each room its own (event, data) list: the fan-out of stored
        notifications, where a user's notification and unread_count leave in one write."""
        if hasattr(self, "_publish"):  # pub/sub: every process must see each one
            for room, messages in items:
                for event, data in messages:
                    await self.emit(event, data, namespace, room=room)
            return
        for room, messages in items:
            await self.deliver_local(room, messages, namespace)

    async def deliver_local(
        self, room: str, messages: list[tuple[str, Any]], namespace: str
    ) -> None:
        """Deliver to this process's sessions in `room` only, bypassing any message queue."""
        if namespace in self.rooms:
            await self._deliver(messages, namespace, room, set())

    async def _deliver(
        self, messages: list[tuple[str, Any]], namespace: str, room: str | None, skip: set[Any]
    ) -> None:
        """Local delivery: held during recovery, rate-limited, encoded once per message, and
        written straight to each socket when nothing is queued ahead (one write per socket)."""
        control = self.delivery
        if room is not None and room.startswith("user:"):
            for event, data in messages:
                if event == "unread_count":
                    control.last_unread[room] = data
        if isinstance(room, str) and not self.rooms[namespace].get(room):
            return  # nobody here: the common case of a user with no open session
        encoded: list[_Encoded | None] = [None] * len(messages)
        sockets = self.server.eio.sockets
        streams = control.streams
        sent = 0
        for sid, eio_sid in list(self.get_participants(namespace, room)):
            if sid in skip:
                continue
            picked: list[int] = []
            for index, (event, data) in enumerate(messages):
                if event == NOTIFICATION and room != sid:
                    held = control.holding.get(sid)
                    if held is not None:
                        held.append(data)
                        continue
                    if not control.admit(sid):
                        self._coalesce(sid, namespace, room)
                        continue
                picked.append(index)
            if not picked:
                continue
            sent += len(picked)
            stream = streams.get(sid) if streams else None
            if stream is not None:  # the same holds and buckets; its own writer
                stream.send([messages[index] for index in picked])
                continue
            chosen: list[_Encoded] = []
            for index in picked:
                message = encoded[index]
                if message is None:
                    event, data = messages[index]
                    message = encoded[index] = _Encoded(event, data, namespace)
                chosen.append(message)
            if all(message.frame for message in chosen):
                frame = b"".join(message.frame for message in chosen)
                if write_now(sockets.get(eio_sid), frame):
                    control.direct_writes += 1
                    continue
            for message in chosen:
                for eio_pkt in message.eio_packets(self.server.packet_class):
                    await self.server._send_eio_packet(eio_sid, eio_pkt)
        control.events_out += sent

    def _coalesce(self, sid: str, namespace: str, room: str | None) -> None:
        """Too many for this session now: count them, and send one unread_count when it may."""
        control = self.delivery
        first = sid not in control.missed
        control.missed[sid] = control.missed.get(sid, 0) + 1
        if first:
            delay = control.buckets[sid].wait_time()
            asyncio.get_running_loop().call_later(
                delay, lambda: asyncio.ensure_future(self._flush_missed(sid, namespace, room))
            )

    async def _flush_missed(self, sid: str, namespace: str, room: str | None) -> None:
        control = self.delivery
        missed = control.missed.pop(sid, 0)
        if not missed or not self.is_connected(sid, namespace):
            return
        last = control.last_unread.get(room or "") or {}
        payload = {"count": last.get("count"), "missed": missed}
        await self.emit("unread_count", payload, namespace, room=sid, ignore_queue=True)


class _Encoded:
    """One Socket.IO EVENT, encoded once for all its recipients: the websocket frame for a
    direct write (b"" when it needs the general encoder: another namespace, binary data) and,
    on first need, the Engine.IO packets for the queued way."""

    __slots__ = ("_args", "_event", "_namespace", "_packets", "frame")

    def __init__(self, event: str, data: Any, namespace: str) -> None:
        self._event = event
        self._namespace = namespace
        self._args = list(data) if isinstance(data, tuple) else ([] if data is None else [data])
        self._packets: list[eio_packet.Packet] | None = None
        self.frame = b""
        if namespace == "/":
            try:
                self.frame = text_frame(b"42" + orjson.dumps([event, *self._args]))
            except TypeError:
                pass

    def eio_packets(self, packet_class: Any) -> list[eio_packet.Packet]:
        if self._packets is None:
            encoded = packet_class(
                packet.EVENT, namespace=self._namespace, data=[self._event, *self._args]
            ).encode()
            parts = encoded if isinstance(encoded, list) else [encoded]
            self._packets = [eio_packet.Packet(eio_packet.MESSAGE, part) for part in parts]
        return self._packets


class LocalManager(DeliveryMixin):
    """One process: python-socketio's in-memory manager plus delivery control."""


class RedisManager(socketio.AsyncRedisManager, DeliveryMixin):
    """Many processes: Redis pub/sub between them, delivery control on each."""
