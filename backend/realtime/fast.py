"""Speed settings for python-socketio: orjson for packets (the codec is backend.codec), websocket
compression optional, and a direct write of outbound frames when nothing is queued ahead of them.

python-engineio sends every packet through a per-socket queue and a writer task: one task wake-up,
one `wait_for` and one `send_str` per packet. For a fan-out that is most of the cost. When the
writer is idle with an empty queue, everything queued before has already been written, so a new
frame may go straight to the transport without overtaking anything; in every other case
(polling, an upgrade in progress, a busy writer, a slow reader with a full buffer, a closing
socket) the packet takes the ordinary queue.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp.web import Request, WebSocketResponse
from engineio.async_drivers import aiohttp as eio_aiohttp

# Past this many bytes waiting in a socket's transport, frames queue (and the writer awaits drain).
WRITE_BUFFER_LIMIT = 64 * 1024


class WriterQueue:
    """Engine.IO's outbound queue, knowing when its writer waits with nothing in hand.

    The subset of asyncio.Queue that python-engineio uses (put, put_nowait, get, get_nowait,
    task_done, join, qsize, empty), without its three deques and an Event per socket, allocated
    whether anything is ever queued or not: about 3 KB of every held connection. Here the items'
    deque exists only while something is queued, the waiters and the join event only while
    someone waits.
    """

    __slots__ = ("_finished", "_getters", "_items", "_unfinished", "on_put", "writer_waiting")

    def __init__(self, maxsize: int = 0) -> None:
        del maxsize  # python-engineio's queues are unbounded
        self._items: deque[Any] | None = None
        self._getters: list[asyncio.Future[None]] | None = None
        self._unfinished = 0
        self._finished: asyncio.Event | None = None
        # True while nothing is being written (no writer, or one awaiting an empty queue).
        self.writer_waiting = False
        # Called on every put: a writer started on demand (engine.LeanSocket) instead of waiting.
        self.on_put: Callable[[], None] | None = None

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        items = self._items
        if items is None:
            items = self._items = deque()
        items.append(item)
        self._unfinished += 1
        self._wake_one()
        if self.on_put is not None:
            self.on_put()

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        items = self._items
        if not items:
            raise asyncio.QueueEmpty
        item = items.popleft()
        if not items:
            self._items = None
        return item

    async def get(self) -> Any:
        self.writer_waiting = True
        try:
            while not self._items:
                waiter = asyncio.get_running_loop().create_future()
                if self._getters is None:
                    self._getters = []
                self._getters.append(waiter)
                try:
                    await waiter
                except BaseException:
                    waiter.cancel()
                    getters = self._getters
                    if getters is not None and waiter in getters:
                        getters.remove(waiter)
                    if self._items and not waiter.cancelled():
                        self._wake_one()  # woken, then cancelled: pass the item on
                    raise
            return self.get_nowait()
        finally:
            self.writer_waiting = False

    def _wake_one(self) -> None:
        getters = self._getters
        while getters:
            waiter = getters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                break
        if not getters:
            self._getters = None

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._finished is not None:
            self._finished.set()

    async def join(self) -> None:
        if self._unfinished:
            if self._finished is None:
                self._finished = asyncio.Event()
            self._finished.clear()
            await self._finished.wait()


# Header name as sent -> its environ key: a new string for each request and header otherwise,
# held by every session's environ. Bounded: names are the client's to choose.
ENVIRON_KEYS_MAX = 512
_environ_keys: dict[str, str] = {}


def _environ_key(name: str) -> str:
    key = _environ_keys.get(name)
    if key is None:
        key = sys.intern("HTTP_" + name.upper().replace("-", "_"))
        if len(_environ_keys) < ENVIRON_KEYS_MAX:
            _environ_keys[name] = key
    return key


def translate_request(request: Request) -> dict[str, Any]:
    """python-engineio's environ for an aiohttp request (`engineio.async_drivers.aiohttp`),
    kept by python-socketio for the session's life: the same keys python-engineio,
    python-socketio's admin instrumentation and our connect handler read, each header's key one
    shared string, and without the WSGI constants nothing reads (wsgi.version, wsgi.errors,
    SERVER_NAME, RAW_URI and the like), so that the dict stays in a smaller table."""
    environ: dict[str, Any] = {
        "wsgi.input": request.content,
        "REQUEST_METHOD": request.method,
        "QUERY_STRING": request.query_string or "",
        "REMOTE_ADDR": "127.0.0.1",  # as python-engineio's (the peer is request.remote)
        "aiohttp.request": request,
    }
    for name, value in request.headers.items():
        upper = name.upper()
        if upper == "CONTENT-TYPE":
            environ["CONTENT_TYPE"] = value
            continue
        if upper == "CONTENT-LENGTH":
            environ["CONTENT_LENGTH"] = value
            continue
        key = _environ_key(name)
        if key in environ:
            value = f"{environ[key]},{value}"
        environ[key] = value
    environ["wsgi.url_scheme"] = environ.get("HTTP_X_FORWARDED_PROTO", "http")
    environ["PATH_INFO"] = request.path
    environ["SCRIPT_NAME"] = ""
    return environ


class _Drained(list[Any]):
    """What aiohttp's connection keeps for pipelined requests (a deque, 624 bytes empty), as a
    list: once the connection is a websocket it stays empty for the socket's life."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


def shed_http_state(request: Request, response: WebSocketResponse) -> None:
    """Let go of what aiohttp keeps for HTTP once a connection carries a websocket (about 1.8 KB
    a held connection): the request parser (aiohttp feeds every byte to the websocket reader
    from now on, and checks the parser for None where it uses it), the empty queue of pipelined
    requests, and the headers of the 101 answer, already sent."""
    if response.prepared:
        response._headers = type(response.headers)()  # an empty CIMultiDict
    protocol: Any = request.protocol
    if protocol is None or getattr(protocol, "_payload_parser", None) is None:
        return  # not (or no longer) a websocket connection: nothing to change
    if getattr(protocol, "_messages", None) is not None and not protocol._messages:
        protocol._messages = _Drained()
    if hasattr(protocol, "_parser"):
        protocol._parser = None


class UncompressedWebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
    """Engine.IO's aiohttp websocket without permessage-deflate, which costs memory per socket,
    registered on its Engine.IO socket so that `write_now` can reach its transport."""

    async def __call__(self, environ: dict[str, Any]) -> WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=False
        )
        await self._sock.prepare(request)
        shed_http_state(request, self._sock)
        self.environ = environ
        self.transport = request.transport
        socket = getattr(self.handler, "__self__", None)
        if socket is not None and isinstance(socket.queue, WriterQueue):
            socket.direct_ws = self
        try:
            await self.handler(self)
        finally:
            if socket is not None and getattr(socket, "direct_ws", None) is self:
                socket.direct_ws = None
        return self._sock


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked websocket text frame (RFC 6455 5.2), as a server sends it."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


def write_now(socket: Any, frame: bytes) -> bool:
    """Write an encoded frame straight to the socket's transport if that cannot reorder it.

    False means "not written": the caller sends the packet through Engine.IO's queue instead.
    """
    if socket is None:
        return False
    ws: UncompressedWebSocket | None = getattr(socket, "direct_ws", None)
    if ws is None or not socket.upgraded or socket.upgrading or socket.closing or socket.closed:
        return False
    queue = socket.queue
    if not queue.writer_waiting or queue.qsize():
        return False
    transport = ws.transport
    if transport is None or transport.is_closing() or ws._sock is None or ws._sock.closed:
        return False
    if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
        return False
    # A client past its ping timeout goes the queued way, where Engine.IO closes it.
    if socket.last_ping and time.time() - socket.last_ping > socket.server.ping_timeout:
        return False
    transport.write(frame)
    return True
