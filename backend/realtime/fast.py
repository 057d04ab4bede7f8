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
import time
from typing import Any

from aiohttp.web import WebSocketResponse
from engineio.async_drivers import aiohttp as eio_aiohttp

# Past this many bytes waiting in a socket's transport, frames queue (and the writer awaits drain).
WRITE_BUFFER_LIMIT = 64 * 1024


class WriterQueue(asyncio.Queue[Any]):
    """Engine.IO's outbound queue, knowing when its writer waits with nothing in hand."""

    writer_waiting = False

    async def get(self) -> Any:
        self.writer_waiting = True
        try:
            return await super().get()
        finally:
            self.writer_waiting = False


class UncompressedWebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
    """Engine.IO's aiohttp websocket without permessage-deflate, which costs memory per socket,
    registered on its Engine.IO socket so that `write_now` can reach its transport."""

    async def __call__(self, environ: dict[str, Any]) -> WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=False
        )
        await self._sock.prepare(request)
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
