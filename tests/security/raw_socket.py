"""A raw Engine.IO/Socket.IO client over aiohttp: frames exactly as a hostile client sends them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from ..conftest import RunningServer

WS_PATH = "/socket.io/?EIO=4&transport=websocket"
POLL_PATH = "/socket.io/?EIO=4&transport=polling"


class RawSocket:
    """One websocket to /socket.io/; answers pings while it reads."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.sid: str | None = None
        self.frames: list[str | bytes] = []

    @classmethod
    async def open(
        cls, server: RunningServer, http: aiohttp.ClientSession | None = None
    ) -> RawSocket:
        """`http` without a connection limit for more than 100 at once (aiohttp's default)."""
        async with asyncio.timeout(10):
            ws = await (http or server.http).ws_connect(server.url + WS_PATH)
        sock = cls(ws)
        first = await sock.receive(5)
        assert isinstance(first, str) and first.startswith("0"), first
        return sock

    async def connect(self, token: str, timeout: float = 10) -> str:
        """Send the Socket.IO CONNECT; the CONNECT or CONNECT_ERROR frame that answers."""
        await self.ws.send_str("40" + json.dumps({"token": token}))
        while True:
            frame = await self.receive(timeout)
            if frame is None:
                raise ConnectionError("closed before the CONNECT answer")
            if isinstance(frame, str) and frame.startswith(("40", "44")):
                if frame.startswith("40"):
                    self.sid = json.loads(frame[2:])["sid"]
                return frame

    async def receive(self, timeout: float) -> str | bytes | None:
        """The next frame other than a ping (answered), or None once the socket is closed."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    if msg.data == "2":
                        await self.ws.send_str("3")
                        continue
                    self.frames.append(msg.data)
                    return msg.data  # type: ignore[no-any-return]
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    return None

    async def closed_within(self, timeout: float) -> bool:
        """True if the server ends this session (Engine.IO CLOSE or the websocket) in time."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    frame = await self.receive(timeout)
                    if frame is None or frame == "1":
                        return True
        except TimeoutError:
            return False

    async def events(self, name: str, timeout: float) -> list[Any]:
        """Events called `name` that arrive within `timeout` (the socket keeps being read)."""
        found: list[Any] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    frame = await self.receive(timeout)
                    if frame is None:
                        break
                    if isinstance(frame, str) and frame.startswith("42"):
                        event = json.loads(frame[2:])
                        if event[0] == name:
                            found.append(event[1])
        except TimeoutError:
            pass
        return found

    async def close(self) -> None:
        await self.ws.close()
