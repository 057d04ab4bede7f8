"""Protocol guards: what a JSON-only, authenticated Socket.IO server refuses, and how.

python-socketio accepts binary events (buffering every announced attachment, with no bound),
keeps an Engine.IO session that never sends the Socket.IO CONNECT for as long as it answers
pings, and logs a traceback for every packet it cannot parse without ever closing the sender.
Here, as in Node's socket.io:

- a binary frame or a binary event closes the session at once: our protocol is JSON;
- a session with no successful CONNECT is closed after `connect_timeout` (Node's
  `connectTimeout`), and again if it leaves every namespace;
- a malformed packet, at either protocol layer, is logged as one line (rate-limited across the
  server) and counted; the session's `max_malformed`-th one closes it;
- a long-polling POST over the payload limit is answered 413 at once and closes its session.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import engineio
import socketio
from socketio import packet

from .limits import TokenBucket

log = logging.getLogger(__name__)

# Malformed-packet warnings across the whole server: a burst of this many, then one a second.
LOG_BURST = 10
LOG_RATE = 1.0

KNOWN_PACKETS = (packet.CONNECT, packet.DISCONNECT, packet.EVENT, packet.ACK)


class ProtocolGuard:
    """Counts each session's malformed packets and keeps the log to one line per packet, rate
    limited, whoever sends them."""

    def __init__(self, *, max_malformed: int) -> None:
        self.max_malformed = max_malformed
        self._log_bucket = TokenBucket(LOG_RATE, LOG_BURST)
        self._suppressed = 0
        self.malformed_total = 0
        self.refused_total = 0

    def warn(self, message: str, *args: Any) -> None:
        if not self._log_bucket.take():
            self._suppressed += 1
            return
        if self._suppressed:
            message += " (%d similar lines suppressed)"
            args = (*args, self._suppressed)
            self._suppressed = 0
        log.warning(message, *args)

    def malformed(self, socket: Any, what: str) -> bool:
        """Count one malformed packet on an Engine.IO socket; True when it must now close."""
        self.malformed_total += 1
        count = getattr(socket, "malformed", 0) + 1
        socket.malformed = count
        closing = count >= self.max_malformed
        self.warn(
            "%s: malformed packet %d of %d (%s)%s",
            socket.sid,
            count,
            self.max_malformed,
            what[:100],
            "; closing the session" if closing else "",
        )
        return closing

    def refused(self, socket: Any, why: str) -> None:
        """A packet that closes its session at once."""
        self.refused_total += 1
        self.warn("%s: %s; closing the session", socket.sid, why)


class GuardedEngine(engineio.AsyncServer):  # type: ignore[misc]
    """Engine.IO server answering an oversized long-polling POST before reading its body."""

    guard: ProtocolGuard
    request_body_timeout: float = 30.0

    async def handle_request(self, *args: Any, **kwargs: Any) -> Any:
        request = args[0]
        length = getattr(request, "content_length", None)
        if request.method == "POST" and length is not None and length > self.max_http_buffer_size:
            # python-engineio would disconnect the session waiting for a poll to carry the CLOSE
            # packet, leaving this request unanswered until the session timed out.
            sock = self.sockets.get(request.query.get("sid", ""))
            if sock is not None:
                self.guard.refused(sock, f"a {length}-byte polling POST")
                await sock.close(wait=False, reason=self.reason.TRANSPORT_ERROR)
            environ = self._async["translate_request"](request)
            response = await self._make_response(
                {
                    "status": "413 PAYLOAD TOO LARGE",
                    "headers": [("Content-Type", "text/plain"), ("Connection", "close")],
                    "response": f"payload over {self.max_http_buffer_size} bytes".encode(),
                },
                environ,
            )
            response.force_close()  # the body is never read, so the connection cannot be reused
            return response
        return await super().handle_request(*args, **kwargs)

    async def _service_task(self) -> None:
        """python-engineio's sweep without its `wait_for` (a task) per socket visit, 975 of them a
        second at 19.5k sockets: once per ping timeout, closed sockets leave the table and the
        sockets no timer of ours watches (long-polling, or upgraded from it) have their pings
        checked. A LeanSocket's own ping timer closes it when its pong is late."""
        self.service_task_event = event = self.create_event()
        while not event.is_set():
            try:
                await asyncio.wait_for(event.wait(), timeout=self.ping_timeout)
                break
            except TimeoutError:
                pass
            for sock in list(self.sockets.values()):
                if sock.closed:
                    self.sockets.pop(sock.sid, None)
                elif not (sock.closing or getattr(sock, "lean", False)):
                    try:
                        await sock.check_ping_timeout()
                    except Exception:
                        log.exception("%s: ping check failed", sock.sid)


def create_route(app: Any, engine: GuardedEngine, endpoint: str) -> None:
    """python-engineio's aiohttp routes, with GET going to python-engineio's own handler: a GET
    has no body to refuse, and a websocket's whole life runs under it, so the guard's frame would
    be held that long. POST (bodies over the limit) and OPTIONS go through the guard."""
    app.router.add_get(endpoint, engineio.AsyncServer.handle_request.__get__(engine))
    app.router.add_post(endpoint, engine.handle_request)
    app.router.add_route("OPTIONS", endpoint, engine.handle_request)


class GuardedServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's AsyncServer with the guards above."""

    def __init__(
        self, *, guard: ProtocolGuard, connect_timeout: float, request_body_timeout: float,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        self.guard = guard
        self.connect_timeout = connect_timeout
        self._connect_timers: dict[str, asyncio.TimerHandle] = {}
        super().__init__(**kwargs)
        self.eio.guard = guard
        self.eio.request_body_timeout = request_body_timeout

    def _engineio_server_class(self) -> type[GuardedEngine]:
        return GuardedEngine

    # -- sessions that never connect -------------------------------------------------------

    def _connected(self, eio_sid: str) -> bool:
        """Whether the Engine.IO session has finished a Socket.IO CONNECT to any namespace."""
        manager = self.manager
        for namespace in list(manager.get_namespaces()):
            sid = manager.sid_from_eio_sid(eio_sid, namespace)
            if sid is not None and manager.is_connected(sid, namespace):
                return True
        return False

    def _arm_connect_timer(self, eio_sid: str) -> None:
        timer = self._connect_timers.pop(eio_sid, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._connect_timers[eio_sid] = loop.call_later(
            self.connect_timeout, self._connect_due, eio_sid
        )

    def _connect_due(self, eio_sid: str) -> None:
        self._connect_timers.pop(eio_sid, None)
        sock = self.eio.sockets.get(eio_sid)
        if sock is None or sock.closing or sock.closed or self._connected(eio_sid):
            return
        self.guard.warn("%s: no Socket.IO CONNECT in %g s; closing", eio_sid, self.connect_timeout)
        self.start_background_task(self._close_eio, eio_sid)

    async def _close_eio(self, eio_sid: str) -> None:
        sock = self.eio.sockets.get(eio_sid)
        if sock is not None:
            # wait=False: a long-polling client may have no poll pending to carry the CLOSE.
            await sock.close(wait=False, reason=self.eio.reason.SERVER_DISCONNECT)

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        self._arm_connect_timer(eio_sid)
        return await super()._handle_eio_connect(eio_sid, environ)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> Any:
        timer = self._connect_timers.pop(eio_sid, None)
        if timer is not None:
            timer.cancel()
        return await super()._handle_eio_disconnect(eio_sid, reason)

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        # A CONNECT being handled (auth, the batched user upsert) is not an idle session: the
        # timer waits for it, however slow a starved box makes it, and then goes on with
        # what was left of it if the CONNECT was refused.
        timer = self._connect_timers.pop(eio_sid, None)
        if timer is not None:
            timer.cancel()
        try:
            await super()._handle_connect(eio_sid, namespace, data)
        finally:
            if timer is not None and eio_sid not in self._connect_timers:
                if not self._connected(eio_sid):
                    left = max(timer.when() - asyncio.get_running_loop().time(), 0.0)
                    self._connect_timers[eio_sid] = asyncio.get_running_loop().call_later(
                        left, self._connect_due, eio_sid
                    )

    async def _handle_disconnect(
        self, eio_sid: str, namespace: str | None, reason: Any = None
    ) -> None:
        await super()._handle_disconnect(eio_sid, namespace, reason)
        self._rearm_if_bare(eio_sid)

    async def disconnect(
        self, sid: str, namespace: str | None = None, ignore_queue: bool = False
    ) -> None:
        eio_sid = self.manager.eio_sid_from_sid(sid, namespace or "/")
        await super().disconnect(sid, namespace=namespace, ignore_queue=ignore_queue)
        if eio_sid is not None:
            self._rearm_if_bare(eio_sid)

    def _rearm_if_bare(self, eio_sid: str) -> None:
        """A session that left every namespace is an unauthenticated one again."""
        sock = self.eio.sockets.get(eio_sid)
        if sock is not None and not (sock.closing or sock.closed) and not self._connected(eio_sid):
            self._arm_connect_timer(eio_sid)

    # -- inbound packets -------------------------------------------------------------------

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        sock = self.eio.sockets.get(eio_sid)
        if sock is None:
            return
        if not isinstance(data, str):
            self.guard.refused(sock, "a binary frame (this protocol is JSON)")
            await self._close_eio(eio_sid)
            return
        try:
            pkt = self.packet_class(encoded_packet=data)
        except Exception as exc:  # anything the decoder trips on is the sender's fault
            if self.guard.malformed(sock, f"undecodable: {type(exc).__name__}"):
                await self._close_eio(eio_sid)
            return
        if pkt.packet_type in (packet.BINARY_EVENT, packet.BINARY_ACK):
            self.guard.refused(sock, "a binary event (this protocol is JSON)")
            await self._close_eio(eio_sid)
            return
        problem = self._problem(eio_sid, pkt)
        if problem is not None:
            if self.guard.malformed(sock, problem):
                await self._close_eio(eio_sid)
            return
        kind = pkt.packet_type
        if kind == packet.CONNECT:
            await self._handle_connect(eio_sid, pkt.namespace, pkt.data)
        elif kind == packet.DISCONNECT:
            await self._handle_disconnect(eio_sid, pkt.namespace, self.reason.CLIENT_DISCONNECT)
        elif kind == packet.EVENT:
            await self._handle_event(eio_sid, pkt.namespace, pkt.id, pkt.data)
        else:
            await self._handle_ack(eio_sid, pkt.namespace, pkt.id, pkt.data)

    def _problem(self, eio_sid: str, pkt: Any) -> str | None:
        """Why a decoded packet is malformed, or None."""
        kind = pkt.packet_type
        if kind not in KNOWN_PACKETS:
            return f"packet type {kind!r}"
        if kind == packet.CONNECT:
            return None
        namespace = pkt.namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None:
            return f"{packet.packet_names[kind]} before CONNECT to {namespace[:40]!r}"
        if kind == packet.EVENT:
            data = pkt.data
            if not isinstance(data, list) or not data or not isinstance(data[0], str):
                return "an event must be a JSON array starting with its name"
        elif kind == packet.ACK:
            if not isinstance(pkt.data, list):
                return "an ack must be a JSON array"
            if pkt.id not in self.manager.callbacks.get(sid, {}):
                return "an ack for nothing this server asked"
        return None
