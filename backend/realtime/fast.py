"""Speed settings for python-socketio: orjson for packets, websocket compression optional."""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp.web import WebSocketResponse
from engineio.async_drivers import aiohttp as eio_aiohttp


class OrjsonModule:
    """The `json` interface python-socketio expects, backed by orjson (stdlib as fallback)."""

    @staticmethod
    def dumps(obj: Any, **_kwargs: Any) -> str:
        try:
            return orjson.dumps(obj).decode()
        except TypeError:  # what orjson refuses (say, an int beyond 64 bits) the stdlib takes
            return json.dumps(obj, separators=(",", ":"))

    @staticmethod
    def loads(data: str | bytes, **_kwargs: Any) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return json.loads(data)


class UncompressedWebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
    """Engine.IO's aiohttp websocket without permessage-deflate, which costs memory per socket."""

    async def __call__(self, environ: dict[str, Any]) -> WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=False
        )
        await self._sock.prepare(request)
        self.environ = environ
        await self.handler(self)
        return self._sock
