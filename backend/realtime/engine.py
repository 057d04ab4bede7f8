"""Engine.IO websocket sessions with fewer tasks: python-engineio's AsyncSocket, made leaner.

Besides aiohttp's handler task, python-engineio gives every websocket session a task per inbound
read (wrapped in `wait_for`, which on Python 3.11 is one more task), a writer task waiting on its
queue through another `wait_for` task, and a task per ping that sleeps a ping interval. Held
connections cost that on every ping: a 19.5k-connection server pinging every 10 s spent a quarter
of its core on pings alone (bench/README.md). A LeanSocket keeps the protocol and python-engineio's
state fields (connected, upgraded, closing, closed, last_ping, queue), and:

- reads with no timeout of their own: one timer per session, the ping's, also watches the pong
  (a client silent for a ping interval and timeout is closed, as Node's socket.io does), where a
  timeout per read cost a timer handle per session and per packet;
- writes from one task started when something is queued and ending when the queue is empty
  (a held socket that is written directly, `fast.write_now`, has no writer task waiting: a task,
  its frame and its future, about 1.1 KB a socket); the reader, when it ends, queues None, after
  which the writer closes the websocket, as python-engineio's does;
- schedules each ping, and then its pong's deadline, on a `DueQueue` shared by every session of
  the server (one timer handle for all, where one per session was ≈ 0.6 KB of uvloop's each),
  and writes the ping straight to the transport when nothing is queued ahead of it
  (`fast.write_now`).

A session upgraded from long-polling keeps python-engineio's own handler, and its pings take the
queue, whose writer times out after a ping interval and timeout without a packet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from engineio import exceptions, packet, payload
from engineio.async_socket import AsyncSocket

from .fast import WriterQueue, text_frame, write_now

log = logging.getLogger(__name__)

PING = packet.Packet(packet.PING)
PING_FRAME = text_frame(PING.encode().encode())
# What an Engine.IO v4 client sends once connected (the upgrade's PING probe and UPGRADE are
# read by the upgrade itself, not here).
CLIENT_PACKETS = frozenset({packet.CLOSE, packet.PONG, packet.MESSAGE})
PONG_TEXT = packet.Packet(packet.PONG).encode()  # "3"


# A DueQueue runs what is due at most this late, so that one timer callback takes every session
# due in the same few milliseconds.
DUE_GRAIN_SECONDS = 0.01


class DueQueue:
    """Sessions each due a fixed delay after they were added (a ping interval, a ping timeout),
    on one timer handle: with one delay, due times come in the order sessions were added, so a
    FIFO is all the order needed. An entry is (due, session); the session's `ping_timer` names
    the entry it waits for, and one it no longer names (answered, closed) is skipped when due."""

    __slots__ = ("_delay", "_entries", "_fire", "_handle")

    def __init__(self, delay: float, fire: Callable[[LeanSocket], None]) -> None:
        self._delay = delay
        self._fire = fire
        self._entries: deque[tuple[float, LeanSocket]] = deque()
        self._handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, sock: LeanSocket) -> tuple[float, LeanSocket]:
        loop = asyncio.get_running_loop()
        entry = (loop.time() + self._delay, sock)
        self._entries.append(entry)
        if self._handle is None:
            self._handle = loop.call_at(entry[0] + DUE_GRAIN_SECONDS, self._run)
        return entry

    def _run(self) -> None:
        self._handle = None
        loop = asyncio.get_running_loop()
        entries = self._entries
        now = loop.time()
        for _ in range(len(entries)):  # bounded by what was queued when this run began
            entry = entries[0]
            if entry[0] > now:
                break
            entries.popleft()
            sock = entry[1]
            if sock.ping_timer is entry:
                sock.ping_timer = None
                try:
                    self._fire(sock)
                except Exception:
                    log.exception("%s: ping timer failed", sock.sid)
        if entries and self._handle is None:
            self._handle = loop.call_at(entries[0][0] + DUE_GRAIN_SECONDS, self._run)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._entries.clear()


def _clocks(server: Any) -> tuple[DueQueue, DueQueue]:
    """The server's ping and pong DueQueues, made on first use (inside the running loop)."""
    clocks: tuple[DueQueue, DueQueue] | None = getattr(server, "ping_clocks", None)
    if clocks is None:
        clocks = (
            DueQueue(server.ping_interval, LeanSocket._ping_due),
            DueQueue(server.ping_timeout, LeanSocket._pong_due),
        )
        server.ping_clocks = clocks
    return clocks


class LeanSocket(AsyncSocket):  # type: ignore[misc]
    """An Engine.IO session; instances start as AsyncSocket and get this class in SocketTable."""

    # python-engineio's own fields, typed here (python-engineio ships no annotations).
    last_ping: float | None
    connected: bool
    upgraded: bool
    closing: bool
    closed: bool

    lean = False  # True once this session's websocket runs the loops below
    malformed = 0  # malformed packets so far (guard.ProtocolGuard)
    # The DueQueue entry this session waits for (its next ping, or its pong's deadline).
    ping_timer: tuple[float, LeanSocket] | None = None
    # The writer on demand (a WriterQueue): running while something is queued; `written_out`
    # once it has taken the None that ends it and closed the websocket.
    writer: asyncio.Task[None] | None = None
    written_out = False
    lean_ws: Any = None

    # -- pings: one timer handle per session, not a task per ping -----------------------------

    def schedule_ping(self) -> None:
        if self.last_ping:  # only once the previous ping was answered, as in python-engineio
            self.last_ping = None
            self.ping_timer = _clocks(self.server)[0].add(self)  # replaces a pong deadline

    def _ping_due(self) -> None:
        if self.closing or self.closed:
            return
        self.last_ping = time.time()
        if not (self.lean and write_now(self, PING_FRAME)):
            self.queue.put_nowait(PING)
        if self.lean:  # then the pong's deadline (schedule_ping replaces it)
            self.ping_timer = _clocks(self.server)[1].add(self)

    def _pong_due(self) -> None:
        if self.last_ping is None or self.closing or self.closed:
            return  # answered (schedule_ping ran), or ending anyway
        # As python-engineio's check_ping_timeout: a CLOSE packet, then the writer closes the
        # websocket, which ends the reader.
        self.server.start_background_task(
            self.close, wait=False, abort=False, reason=self.server.reason.PING_TIMEOUT
        )

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        self.ping_timer = None  # its DueQueue entry is skipped
        closing_now = not (self.closed or self.closing)
        if not self.upgraded:
            # Long-polling: waiting would need a poll to carry the CLOSE packet, and a client
            # that sends none would hold the caller (a POST, or shutdown) until it timed out.
            wait = False
        await super().close(wait=wait, abort=abort, reason=reason)
        if closing_now and self.upgraded:
            # The writer ends after the CLOSE packet and closes the websocket, which ends the
            # reader too, even while it waits on a client that sends nothing.
            self.queue.put_nowait(None)

    def hang_up(self) -> bool:
        """End this websocket session after what is already queued, with a websocket close frame
        and no Engine.IO CLOSE packet, so that every official client reconnects.

        python-engineio's client takes a CLOSE packet as final and never reconnects (the
        JavaScript client reconnects either way); a websocket closed under it is a lost transport
        to both, which they retry with backoff and their `last_seq`. False for a session that is
        not one of ours (long-polling, or upgraded from it): the caller sends CLOSE instead.
        """
        if not self.lean or self.closing or self.closed:
            return False
        self.ping_timer = None  # its DueQueue entry is skipped
        # The writer ends after what is queued and closes the websocket; the reader then ends.
        self.queue.put_nowait(None)
        return True

    # -- what the server sends -----------------------------------------------------------------

    async def send(self, pkt: packet.Packet) -> None:
        """Written straight to an idle websocket when nothing can be overtaken (`write_now`: the
        writer idle with nothing queued, the client within its ping timeout); queued as
        python-engineio does otherwise. Every connect's CONNECT answer takes the first way
        instead of starting a writer task."""
        if self.lean and not pkt.binary and write_now(self, text_frame(pkt.encode().encode())):
            self.server.logger.info(
                "%s: Sending packet %s data %s", self.sid, packet.packet_names[pkt.packet_type],
                pkt.data,
            )  # fmt: skip
            return
        await super().send(pkt)

    # -- what a client sends -------------------------------------------------------------------

    async def receive(self, pkt: packet.Packet) -> None:
        if self.closed:
            raise exceptions.SocketIsClosedError()
        if pkt.packet_type not in CLIENT_PACKETS:
            # OPEN, PING, NOOP, UPGRADE outside an upgrade, or a type with no name
            if self.server.guard.malformed(self, f"Engine.IO packet type {pkt.packet_type!r}"):
                await self.close(wait=False, reason=self.server.reason.TRANSPORT_ERROR)
            return
        await super().receive(pkt)

    async def handle_post_request(self, environ: dict[str, Any]) -> None:
        """A long-polling POST: its body within REQUEST_BODY_TIMEOUT_SECONDS, its packets
        checked like a websocket's."""
        length = int(environ.get("CONTENT_LENGTH", "0"))
        if length > self.server.max_http_buffer_size:
            raise exceptions.ContentTooLongError()
        try:
            # All of it (python-engineio's read(length) takes whatever has arrived so far).
            async with asyncio.timeout(self.server.request_body_timeout):
                body = await environ["wsgi.input"].readexactly(length)
        except (TimeoutError, asyncio.IncompleteReadError):
            self.server.guard.refused(self, "a polling POST body that did not arrive in time")
            raise exceptions.EngineIOError() from None
        try:
            packets = payload.Payload(encoded_payload=body.decode("utf-8")).packets
        except Exception as exc:
            if self.server.guard.malformed(self, f"polling payload: {type(exc).__name__}"):
                await self.close(wait=False, reason=self.server.reason.TRANSPORT_ERROR)
            return
        for pkt in packets:
            await self.receive(pkt)

    # -- the websocket transport ---------------------------------------------------------------

    async def _websocket_handler(self, ws: Any) -> None:
        if self.connected:  # an upgrade from long-polling: python-engineio's handler
            await super()._websocket_handler(ws)
            return
        self.connected = True
        self.upgraded = True
        self.lean = True
        server = self.server
        queue = self.queue
        on_demand = isinstance(queue, WriterQueue)
        writer: asyncio.Task[None] | None = None
        if on_demand:
            self.lean_ws = ws
            # The OPEN packet, queued before the upgrade: written here, not by a writer task
            # (nothing goes direct meanwhile); then a writer starts whenever one is needed.
            queue.writer_waiting = False
            await self._write_queued(queue)
            if not self.written_out:
                queue.on_put = self._start_writer
        else:  # an asyncio.Queue (websocket compression on): one writer for the socket's life
            writer = asyncio.get_running_loop().create_task(self._write_loop(ws))
        limit = server.max_http_buffer_size
        # aiohttp's websocket, read directly: python-engineio's `ws.wait()` would be one more
        # coroutine frame held for the socket's life.
        sock = ws._sock
        # python-engineio logs every packet received at INFO (off unless its logger is on).
        quiet = not server.logger.isEnabledFor(logging.INFO)
        while True:
            try:
                data = (await sock.receive()).data
            except (asyncio.CancelledError, Exception):
                break  # closed (by _pong_due too), refused frame, or the server going away
            if not isinstance(data, str | bytes) or len(data) > limit:
                break  # a close (its data is no text), or a frame over the limit
            if data == PONG_TEXT and quiet:
                # Every session's answer to every ping: what python-engineio's receive() does
                # with it, without a packet object, two coroutines and a disabled log call.
                if self.closed:
                    break
                self.schedule_ping()
                continue
            try:
                pkt = packet.Packet(encoded_packet=data)
            except Exception as exc:
                if self.server.guard.malformed(self, f"Engine.IO: {type(exc).__name__}"):
                    break
                continue
            data = None  # not held while the socket waits for its next frame (a CONNECT's token)
            try:
                await self.receive(pkt)
            except exceptions.SocketIsClosedError:
                break
            except Exception:
                log.exception("%s: error handling an inbound packet", self.sid)
            pkt = None
            if self.closed:
                break  # closed by a guard or the server: stop reading what the client sends
        self.queue.put_nowait(None)  # the writer ends after what is queued before it
        if on_demand:
            writer = self.writer
        if writer is not None:
            await writer
        await self.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)
        # A DueQueue may name this session until its entry comes due (up to a ping interval and
        # timeout): it keeps the session's few fields then, not its websocket and request.
        self.lean_ws = None

    def _start_writer(self) -> None:
        if self.writer is None and not self.written_out:
            queue = self.queue
            queue.writer_waiting = False
            self.writer = asyncio.get_running_loop().create_task(self._write_queued(queue))

    async def _write_queued(self, queue: WriterQueue) -> None:
        """Write what is queued, then end (and let the next put start another); after a None,
        close the websocket and write nothing more."""
        ws = self.lean_ws
        done = False
        try:
            while queue.qsize():
                pkt = queue.get_nowait()
                queue.task_done()
                if pkt is None:
                    done = True
                    break
                await ws.send(pkt.encode())
        except Exception:
            done = True  # a transport that failed: the reader sees it closed too
        finally:
            self.writer = None
            if done:
                self.written_out = True
                queue.on_put = None
            else:
                queue.writer_waiting = True
        if done:
            try:
                await ws.close()
            except Exception:
                pass

    async def _write_loop(self, ws: Any) -> None:
        queue = self.queue
        try:
            while True:
                pkt = await queue.get()
                queue.task_done()
                if pkt is None:
                    break
                await ws.send(pkt.encode())
        except Exception:
            pass  # a transport that failed: the reader sees it closed too
        try:
            await ws.close()
        except Exception:
            pass


class SocketTable(dict[str, Any]):
    """python-engineio's sid → socket table: a socket entering it becomes a LeanSocket.

    python-engineio builds its AsyncSocket inline in `_handle_connect` and stores it here at once,
    before any use; this is the one place to choose the class without replacing that method.
    """

    def __setitem__(self, sid: str, sock: Any) -> None:
        if type(sock) is AsyncSocket:
            sock.__class__ = LeanSocket
        super().__setitem__(sid, sock)


async def end_for_reconnect(sock: Any) -> None:
    """Close a session in the way that makes its client come back (shutdown, a deferred
    recovery): see LeanSocket.hang_up."""
    if isinstance(sock, LeanSocket) and sock.hang_up():
        return
    # wait=False: queue the CLOSE packet without waiting on a writer that may be gone.
    await sock.close(wait=False, reason=sock.server.reason.SERVER_DISCONNECT)
