"""A raw Engine.IO v4 / Socket.IO v5 websocket client on an asyncio Protocol.

One `Conn` per simulated user: a few hundred bytes of Python state plus the transport, no task,
no per-connection buffers beyond what a frame needs. It speaks just enough of RFC 6455 for
servers that send unfragmented or fragmented text frames without compression (we never offer
permessage-deflate), and masks its own frames with a zero key (allowed by the wire format; the
servers do not check the key's entropy, and it saves a XOR pass).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

import orjson

NOTIFICATION = b'42["notification",'
RECOVERY = b'42["recovery",'
ZERO_MASK = b"\x00\x00\x00\x00"


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame (FIN set)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + ZERO_MASK + payload


PONG_FRAME = ws_frame(b"3")


class Sink:
    """What one agent process records across all its connections."""

    def __init__(self) -> None:
        self.latencies_us: list[int] = []
        self.received = 0
        self.first_recv_ns = 0
        self.last_recv_ns = 0
        self.recoveries = 0
        self.recovered_false = 0
        self.last_recovery_ns = 0
        self.pings = 0
        self.dropped = 0  # connections closed that we did not close
        self.other_events = 0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


class Conn(asyncio.Protocol):
    """One Socket.IO connection; `ready` resolves to None once connected or to a reason."""

    __slots__ = (
        "auth",
        "buf",
        "closing",
        "compress",
        "frag",
        "got",
        "inflater",
        "handshake_done",
        "host",
        "last_seq",
        "ready",
        "sink",
        "state",
        "transport",
        "user",
        "on_lost",
    )

    def __init__(
        self,
        user: str,
        auth: dict[str, Any],
        host: str,
        sink: Sink,
        ready: asyncio.Future[str | None],
        on_lost: Callable[[Conn], None] | None = None,
        compress: bool = False,
    ) -> None:
        self.compress = compress
        self.inflater: Any = None
        self.user = user
        self.auth = auth
        self.host = host
        self.sink = sink
        self.ready = ready
        self.on_lost = on_lost
        self.buf = bytearray()
        self.frag: bytearray | None = None
        self.handshake_done = False
        self.state = "http"  # http -> eio -> sio -> open -> closed
        self.closing = False
        self.last_seq = 0
        self.got = 0  # notifications this connection received since the last reset
        self.transport: asyncio.Transport | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                + ("Sec-WebSocket-Extensions: permessage-deflate\r\n" if self.compress else "")
                + "\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        was = self.state
        self.state = "closed"
        self.transport = None
        if not self.ready.done():
            self.ready.set_result(f"closed during {was}: {exc!r}" if exc else f"closed in {was}")
        elif not self.closing:
            self.sink.dropped += 1
        if self.on_lost is not None:
            self.on_lost(self)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.handshake_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            status = head.split(b"\r\n", 1)[0]
            del buf[: end + 4]
            if b"permessage-deflate" in head.lower():
                # What the server sends with RSV1 set is deflated (context kept or not: one
                # decompressor per connection reads both); what we send stays plain.
                self.inflater = zlib.decompressobj(-15)
            if b" 101 " not in status + b" ":
                self._fail(f"http: {status.decode(errors='replace')}")
                return
            self.handshake_done = True
            self.state = "eio"
        now = 0
        while True:
            n = len(buf)
            if n < 2:
                return
            b0 = buf[0]
            length = buf[1] & 0x7F
            pos = 2
            if length == 126:
                if n < 4:
                    return
                length = (buf[2] << 8) | buf[3]
                pos = 4
            elif length == 127:
                if n < 10:
                    return
                length = struct.unpack_from("!Q", buf, 2)[0]
                pos = 10
            if n < pos + length:
                return
            payload = bytes(buf[pos : pos + length])
            del buf[: pos + length]
            opcode = b0 & 0x0F
            if opcode == 0x0:  # continuation
                if self.frag is None:
                    continue
                self.frag += payload
                if not b0 & 0x80:
                    continue
                payload = bytes(self.frag)
                self.frag = None
                if self.inflater is not None and payload[:1] == b"\x00":
                    payload = self.inflater.decompress(payload[1:] + b"\x00\x00\xff\xff")
            elif opcode in (0x1, 0x2):
                if b0 & 0x40 and self.inflater is not None:
                    if not b0 & 0x80:
                        self.frag = bytearray(b"\x00")  # marks a compressed message
                        self.frag += payload
                        continue
                    payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
                elif not b0 & 0x80:
                    self.frag = bytearray(payload)
                    continue
            elif opcode == 0x8:  # close
                self.closing = self.closing or self.state != "open"
                if self.transport is not None:
                    self.transport.close()
                return
            elif opcode == 0x9:  # ping
                if self.transport is not None:
                    self.transport.write(ws_frame(payload, 0xA))
                continue
            else:
                continue
            if not now:
                now = time.time_ns()
            self._packet(payload, now)

    # -- Engine.IO / Socket.IO ---------------------------------------------------------------
    def _packet(self, p: bytes, now: int) -> None:
        sink = self.sink
        if p.startswith(NOTIFICATION):
            note = orjson.loads(p[18:-1])
            sink.received += 1
            self.got += 1
            if not sink.first_recv_ns:
                sink.first_recv_ns = now
            sink.last_recv_ns = now
            seq = note.get("seq") or 0
            if seq > self.last_seq:
                self.last_seq = seq
            data = note.get("data")
            if isinstance(data, dict):
                sent = data.get("bench_t")
                if sent:
                    sink.latencies_us.append((now - sent) // 1000)
            return
        kind = p[:1]
        if kind == b"2":
            sink.pings += 1
            if self.transport is not None:
                self.transport.write(PONG_FRAME)
        elif kind == b"0" and self.state == "eio":
            self.state = "sio"
            self.send(b"40" + orjson.dumps(self.auth))
        elif p.startswith(b"40"):
            self.state = "open"
            if not self.ready.done():
                self.ready.set_result(None)
        elif p.startswith(b"44"):
            try:
                reason = str(orjson.loads(p[2:]).get("message"))
            except orjson.JSONDecodeError:
                reason = p[2:].decode(errors="replace")
            self._fail(f"refused: {reason}")
        elif p.startswith(RECOVERY):
            info = orjson.loads(p[14:-1])
            sink.recoveries += 1
            sink.last_recovery_ns = now
            if not info.get("recovered", True):
                sink.recovered_false += 1
            seq = info.get("last_seq") or 0
            if seq > self.last_seq:
                self.last_seq = seq
        elif kind == b"1" or p.startswith(b"41"):
            if self.transport is not None:
                self.transport.close()
        else:
            sink.other_events += 1

    def send(self, packet: bytes) -> None:
        if self.transport is not None:
            self.transport.write(ws_frame(packet))

    def _fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_result(reason)
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.write(ws_frame(b"41"))
            self.transport.write(ws_frame(b"", 0x8))
            self.transport.close()


async def open_conn(
    loop: asyncio.AbstractEventLoop,
    user: str,
    auth: dict[str, Any],
    host: str,
    port: int,
    source: str,
    sink: Sink,
    timeout: float,
    on_lost: Callable[[Conn], None] | None = None,
    compress: bool = False,
) -> tuple[Conn | None, str | None]:
    """Connect one user; (conn, None) when Socket.IO-connected, else (None, reason)."""
    ready: asyncio.Future[str | None] = loop.create_future()
    conn = Conn(user, auth, f"{host}:{port}", sink, ready, on_lost, compress)
    try:
        async with asyncio.timeout(timeout):
            await loop.create_connection(lambda: conn, host, port, local_addr=(source, 0))
            reason = await ready
    except TimeoutError:
        conn._fail("timeout")
        return None, "timeout"
    except OSError as exc:
        return None, f"oserror: {exc.strerror or exc}"
    if reason is not None:
        return None, reason
    return conn, None
