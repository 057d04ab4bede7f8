"""A small Server-Sent Events reader for tests: raw aiohttp, parsed as the spec says."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp


class SseReader:
    """Reads one stream in the background; events as {"event", "id", "data"} dicts."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.events: list[dict[str, Any]] = []
        self.comments: list[str] = []
        self.ended = False
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        fields: dict[str, Any] = {}
        try:
            async for raw in self.response.content:
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if fields:
                        if "data" in fields:
                            fields["data"] = json.loads(fields["data"])
                        self.events.append(fields)
                        fields = {}
                elif line.startswith(":"):
                    self.comments.append(line[1:].strip())
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                self._changed.set()
        except (aiohttp.ClientError, asyncio.CancelledError):
            pass
        finally:
            self.ended = True
            self._changed.set()

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    async def _until(self, done: Any, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self._changed.clear()
                await self._changed.wait()

    async def wait_for(self, event: str, count: int = 1, timeout: float = 10.0) -> list[Any]:
        await self._until(lambda: len(self.of(event)) >= count, timeout)
        return self.of(event)

    async def wait_comments(self, text: str, count: int, timeout: float = 10.0) -> None:
        await self._until(lambda: self.comments.count(text) >= count, timeout)

    async def wait_end(self, timeout: float = 10.0) -> None:
        await self._until(lambda: self.ended, timeout)

    async def close(self) -> None:
        self.response.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def open_stream(
    http: aiohttp.ClientSession,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> SseReader:
    response = await http.get(
        url + "/api/v1/notifications/stream",
        headers=headers,
        params=params,
        timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
    )
    assert response.status == 200, await response.text()
    assert response.content_type == "text/event-stream"
    return SseReader(response)
