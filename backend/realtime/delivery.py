"""Delivery control inside the Socket.IO client manager: hold, rate-limit and fan out.

Every local delivery passes through `DeliveryMixin.emit`, also the ones that arrive from other
processes over Redis, so holding a session's live notifications during its recovery and capping
its outbound rate work the same on one process or many.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import orjson
import socketio
from engineio import packet as eio_packet
from redis.asyncio.sentinel import SentinelConnectionPool
from socketio import packet

from .fast import text_frame, write_now
from .limits import TokenBucket

NOTIFICATION = "notification"
# Canaries, gap notices and fan-out chunks share python-socketio's channel; never JSON, so its
# listener would skip them even if ours did not take them out first.
BUS_PREFIX = b"#bus "
# A fan-out chunk: `#bus each <host id>\n<header JSON>\n<body>`, the header naming the namespace,
# the rooms and where each room's (event, data) list ends in the body, so a process decodes only
# the rooms it holds sessions in, and nothing at all when it holds none.
EACH_PREFIX = BUS_PREFIX + b"each "


class StreamSink(Protocol):
    """A session with no Engine.IO socket (a Server-Sent Events stream): delivery hands it the
    (event, data) pairs that passed the hold and the outbound bucket, in order."""

    def send(self, messages: list[tuple[str, Any]]) -> None: ...


# (the notification, the room it went to, one session that got it, how many sessions got it)
PushHook = Callable[[dict[str, Any], str | None, str, int], None]


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
        # the highest seq each session was sent
        self.sent_seq: dict[str, int] = {}
        # Where a session catches up from after a bus gap: not its highest seq, since another
        # process's earlier seq may still be on its way through Redis when a later one was
        # sent here (a publish retried on a new connection, a failover). Seqs sent within the
        # last `settle_seconds` stay in `recent`; older ones are settled, their highest the floor.
        self.settle_seconds = 6.0
        # A live one that arrives again (a publish retried after it got through, or one that a
        # catch-up already sent from the database) is dropped: `seen` has the recent ones, each
        # with the time it was last sent (so settling one entry of `recent` is O(1)).
        self.recent: dict[str, deque[tuple[float, int]]] = {}
        self.seen: dict[str, dict[int, float]] = {}
        self.settled: dict[str, int] = {}
        # While the bus may be losing messages: each session's highest seq when it began, and
        # what was sent since (this process's own emits still go out at once), so the catch-up
        # starts before the gap and skips what the session already has.
        self.gap_open = False
        self.gap_floor: dict[str, int] = {}
        self.sent_in_gap: dict[str, set[int]] = {}
        self.events_out = 0
        self.coalesced = 0  # events not sent to a session over its outbound rate (read by /metrics)
        self.direct_writes = 0  # writes straight to a socket (fast.write_now), one per session
        # sid -> the stream that takes that session's deliveries instead of a socket (sse.py)
        self.streams: dict[str, StreamSink] = {}
        # Told once per notification and room how many local sessions it was written to (the
        # activity timeline's `pushed`); must not await or block.
        self.on_pushed: PushHook | None = None

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

    def note_sent(self, sid: str, seq: int) -> None:
        if self.gap_open:
            if sid not in self.gap_floor:  # connected during the gap: from its first seq
                self.gap_floor[sid] = self.sent_seq.get(sid, seq)
            self.sent_in_gap.setdefault(sid, set()).add(seq)
        now = self.clock()
        recent = self.recent.get(sid)
        if recent is None:
            recent = self.recent[sid] = deque()
            self.seen[sid] = {}
        recent.append((now, seq))
        self.seen[sid][seq] = now
        self._settle(sid, now)
        if seq > self.sent_seq.get(sid, -1):
            self.sent_seq[sid] = seq

    def _settle(self, sid: str, now: float) -> None:
        recent = self.recent.get(sid)
        if recent is None:
            return
        while recent and recent[0][0] < now - self.settle_seconds:
            sent_at, seq = recent.popleft()
            if seq > self.settled.get(sid, -1):
                self.settled[sid] = seq
            seen = self.seen[sid]
            if seen.get(seq) == sent_at:  # its last send, not one repeated since
                del seen[seq]
        if not recent:
            del self.recent[sid]
            del self.seen[sid]

    def already_sent(self, sid: str, seq: int) -> bool:
        """Sent to this session within the settle time: a live copy again is a duplicate."""
        seen = self.seen.get(sid)
        return seen is not None and seq in seen

    def floor(self, sid: str) -> tuple[int | None, set[int]]:
        """Where this session catches up from (None: not sent anything yet), and the seqs past
        that it already has."""
        if sid not in self.sent_seq:
            return None, set()
        self._settle(sid, self.clock())
        seqs = {seq for _, seq in self.recent.get(sid, ())}
        settled = self.settled.get(sid)
        if settled is None:  # everything it was sent is recent, its baseline first
            return max(min(seqs) - 1, 0), seqs  # seqs start at 1: never below 0
        return settled, {seq for seq in seqs if seq > settled}

    def open_gap(self) -> None:
        if not self.gap_open:
            self.gap_open = True
            self.gap_floor = {}
            self.sent_in_gap = {}
            for sid in self.sent_seq:
                floor, sent = self.floor(sid)
                if floor is not None:
                    self.gap_floor[sid] = floor
                    self.sent_in_gap[sid] = sent

    def close_gap(self, sid: str) -> tuple[int | None, set[int]]:
        """Where this session catches up from, and the seqs it already has past that."""
        if sid in self.gap_floor:
            return self.gap_floor.pop(sid), self.sent_in_gap.pop(sid, set())
        return self.floor(sid)

    def end_gap(self) -> None:
        self.gap_open = False
        self.gap_floor = {}
        self.sent_in_gap = {}

    def forget(self, sid: str) -> None:
        self.sent_seq.pop(sid, None)
        self.recent.pop(sid, None)
        self.seen.pop(sid, None)
        self.settled.pop(sid, None)
        self.gap_floor.pop(sid, None)
        self.sent_in_gap.pop(sid, None)
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
        if isinstance(room, str) and not self.rooms[namespace].get(room):
            return  # nobody here: the common case of a user with no open session
        if room is not None and room.startswith("user:"):
            for event, data in messages:
                if event == "unread_count":  # for a coalesced session's catch-up count
                    control.last_unread[room] = data
        encoded: list[_Encoded | None] = [None] * len(messages)
        sockets = self.server.eio.sockets
        streams = control.streams
        sent = 0
        on_pushed = control.on_pushed
        pushes: dict[int, tuple[str, int]] = {}  # message index -> (a session, sessions)
        for sid, eio_sid in list(self.get_participants(namespace, room)):
            if sid in skip:
                continue
            picked: list[int] = []
            for index, (event, data) in enumerate(messages):
                if event == NOTIFICATION:
                    seq = data.get("seq") if isinstance(data, dict) else None
                    if room != sid:
                        if isinstance(seq, int) and control.already_sent(sid, seq):
                            continue  # a copy of one it has (see DeliveryControl.seen)
                        held = control.holding.get(sid)
                        if held is not None:
                            held.append(data)
                            continue
                        if not control.admit(sid):
                            self._coalesce(sid, namespace, room)
                            continue
                    if isinstance(seq, int):
                        control.note_sent(sid, seq)
                picked.append(index)
            if not picked:
                continue
            if on_pushed is not None:
                for index in picked:
                    if messages[index][0] == NOTIFICATION:
                        pushes[index] = (sid, pushes.get(index, (sid, 0))[1] + 1)
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
        if on_pushed is not None:
            for index, (sid, sessions) in pushes.items():
                data = messages[index][1]
                if isinstance(data, dict) and isinstance(data.get("id"), int):
                    on_pushed(data, room, sid, sessions)

    def _coalesce(self, sid: str, namespace: str, room: str | None) -> None:
        """Too many for this session now: count them, and send one unread_count when it may."""
        control = self.delivery
        first = sid not in control.missed
        control.missed[sid] = control.missed.get(sid, 0) + 1
        control.coalesced += 1
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


class BusHooks(Protocol):
    """What the manager tells the bus watch (bus.py)."""

    def heard(self, message: bytes) -> None: ...
    def progress(self) -> None: ...
    def subscribed(self) -> None: ...
    def listen_failed(self, exc: BaseException) -> None: ...
    def may_publish(self) -> bool: ...
    def publish_failed(self, exc: BaseException | None) -> None: ...
    def gap(self, why: str) -> None: ...


class RedisManager(socketio.AsyncRedisManager, DeliveryMixin):
    """Many processes: python-socketio's Redis pub/sub between them, delivery control on each.

    Its own listener and publisher, with three changes: every subscribe confirmation and failure
    goes to the bus watch, which also takes out the canaries; a failed subscription is tried
    again at most `retry_max` apart (python-socketio backs off up to 60 s, so delivery stayed
    broken long after Redis was back); and a publish is tried once on a fresh connection, then
    given up to the watch (the emit has reached this process's sessions already, and the others
    catch up from the database), never stalling the emit.
    """

    watch: BusHooks | None = None
    retry_max: float = 1.0
    publish_timeout: float = 3.0
    fanout_chunk: int = 1000

    def _redis_connect(self) -> None:
        if self.redis is None:  # one client (plain or Sentinel, as python-socketio builds it)
            super()._redis_connect()
        assert self.redis is not None
        # Subscribe confirmations too: each one, ours or redis-py's own reconnect, may follow
        # a gap in what this process heard.
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=False)
        self.connected = True

    async def publish_raw(self, payload: bytes) -> None:
        if self.redis is None:
            self._redis_connect()
        async with asyncio.timeout(self.publish_timeout):
            await self.redis.publish(self.channel, payload)

    async def stray_connections(self) -> list[str]:
        """With Sentinel: drop every connection (publisher and subscriber) that is not on the
        primary the sentinels name now, and say where they were.

        After a failover a connection can stay on the demoted primary, now a replica: a PUBLISH
        there reaches only that node's subscribers, and a subscriber there still hears its own
        process (so its canary comes back) but not the processes on the new primary. Dropped,
        each one reconnects through the sentinels: the publisher on its next publish, the
        subscriber through the listener's retry (a subscribe, so a catch-up)."""
        pool = getattr(self.redis, "connection_pool", None)
        if not isinstance(pool, SentinelConnectionPool):
            return []
        async with asyncio.timeout(self.publish_timeout):
            host, port = await pool.sentinel_manager.discover_master(pool.service_name)
        primary = (str(host), int(port))
        connections = [*pool._available_connections, *pool._in_use_connections]
        places = [
            (str(getattr(connection, "host", "")), int(getattr(connection, "port", 0)))
            for connection in connections
            if connection.is_connected
        ]
        stray = [f"{host}:{port}" for host, port in places if (host, port) != primary]
        if stray:
            await pool.disconnect(inuse_connections=True)
        return stray

    async def _publish(self, data: Any) -> Any:
        await self._publish_payload(self.json.dumps(data))
        return None

    async def _publish_payload(self, payload: Any) -> None:
        watch = self.watch
        if watch is not None and not watch.may_publish():
            watch.publish_failed(None)
            return
        try:
            await self.publish_raw(payload)
        except Exception as exc:
            if watch is None:
                raise
            watch.publish_failed(exc)

    async def emit_each(
        self, items: list[tuple[str, list[tuple[str, Any]]]], namespace: str
    ) -> None:
        """The fan-out across processes: this process's sessions at once, then one bus message
        per `fanout_chunk` rooms (not one per event: python-socketio's emit would publish each,
        awaited in turn, and every process would decode them all). A chunk that fails to publish
        is a gap like any lost emit: the others catch up from the database."""
        for room, messages in items:
            await self.deliver_local(room, messages, namespace)
        lock = self.__dict__.get("_chunk_lock")
        if lock is None:
            lock = self._chunk_lock = asyncio.Lock()
        # One fan-out's chunks leave together and fan-outs in the order they got here.
        async with lock:
            for start in range(0, len(items), self.fanout_chunk):
                chunk = items[start : start + self.fanout_chunk]
                await self._publish_payload(self._encode_chunk(chunk, namespace))

    def _encode_chunk(
        self, items: list[tuple[str, list[tuple[str, Any]]]], namespace: str
    ) -> bytes:
        parts = [orjson.dumps(messages) for _, messages in items]
        ends: list[int] = []
        end = 0
        for part in parts:
            end += len(part)
            ends.append(end)
        header = orjson.dumps({"ns": namespace, "rooms": [room for room, _ in items], "ends": ends})
        return b"".join([EACH_PREFIX, self.host_id.encode(), b"\n", header, b"\n", *parts])

    async def _handle_chunk(self, data: bytes) -> None:
        """Another process's fan-out chunk: deliver to the rooms this process holds sessions in,
        through the same holds, buckets and duplicate check as any local delivery."""
        view = memoryview(data)
        host_end = data.index(b"\n", len(EACH_PREFIX))
        if view[len(EACH_PREFIX) : host_end] == self.host_id.encode():
            return  # its own: delivered locally before it was published
        header_end = data.index(b"\n", host_end + 1)
        header = orjson.loads(view[host_end + 1 : header_end])
        namespace, rooms, ends = header["ns"], header["rooms"], header["ends"]
        here = self.rooms.get(namespace)
        body = view[header_end + 1 :]
        start = 0
        for room, end in zip(rooms, ends, strict=True):
            if here and here.get(room):
                messages = [(event, payload) for event, payload in orjson.loads(body[start:end])]
                await self._deliver(messages, namespace, room, set())
            start = end

    async def _redis_listen_with_retries(self) -> AsyncIterator[dict[str, Any]]:
        first_delay = min(0.1, self.retry_max)
        delay = first_delay
        while True:
            pubsub = None
            try:
                self._redis_connect()
                pubsub = self.pubsub
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    delay = first_delay
                    yield message
            except Exception as exc:
                if self.watch is not None:
                    self.watch.listen_failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()

    async def _listen(self) -> AsyncIterator[bytes]:
        channel = self.channel.encode("utf-8")
        async for message in self._redis_listen_with_retries():
            if message.get("channel") != channel:
                continue
            kind = message.get("type")
            data = message.get("data")
            if self.watch is not None:
                self.watch.progress()
            if kind == "subscribe":
                if self.watch is not None:
                    self.watch.subscribed()
            elif kind == "message" and isinstance(data, bytes):
                if data.startswith(EACH_PREFIX):
                    try:  # in the listener, so in order with every other message
                        await self._handle_chunk(data)
                    except Exception:
                        # Some of its rooms may have had nothing: every session catches up.
                        self._get_logger().exception("could not deliver a fan-out chunk")
                        if self.watch is not None:
                            self.watch.gap("a fan-out chunk could not be delivered")
                elif data.startswith(BUS_PREFIX):
                    if self.watch is not None:
                        self.watch.heard(data)
                else:
                    yield data
