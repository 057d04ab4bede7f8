"""Delivery control inside the Socket.IO client manager: hold, rate-limit and fan out.

Every local delivery passes through `DeliveryMixin.emit`, also the ones that arrive from other
processes over Redis, so holding a session's live notifications during its recovery and capping
its outbound rate work the same on one process or many.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet

from .limits import TokenBucket

NOTIFICATION = "notification"


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
    """Encodes a packet once per emit and writes it to each recipient without a task each."""

    delivery: DeliveryControl

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
        control = self.delivery
        if event == "unread_count" and room is not None and room.startswith("user:"):
            control.last_unread[room] = data
        args = list(data) if isinstance(data, tuple) else ([] if data is None else [data])
        encoded = self.server.packet_class(
            packet.EVENT, namespace=namespace, data=[event, *args]
        ).encode()
        parts = encoded if isinstance(encoded, list) else [encoded]
        eio_packets = [eio_packet.Packet(eio_packet.MESSAGE, part) for part in parts]
        sent = 0
        for sid, eio_sid in list(self.get_participants(namespace, room)):
            if sid in skip:
                continue
            if event == NOTIFICATION and room != sid:
                held = control.holding.get(sid)
                if held is not None:
                    held.append(data)
                    continue
                if not control.admit(sid):
                    self._coalesce(sid, namespace, room)
                    continue
            for eio_pkt in eio_packets:
                await self.server._send_eio_packet(eio_sid, eio_pkt)
            sent += 1
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


class LocalManager(DeliveryMixin):
    """One process: python-socketio's in-memory manager plus delivery control."""


class RedisManager(socketio.AsyncRedisManager, DeliveryMixin):
    """Many processes: Redis pub/sub between them, delivery control on each."""
