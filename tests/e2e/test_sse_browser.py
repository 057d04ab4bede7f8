"""A real EventSource in headless Chromium, opened with a stream ticket by the documented example
(docs/examples/sse-client.js), across a server restart: resumed by last seq, each once, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext

from ..conftest import RunningServer
from .conftest import CHROMIUM

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (Debian package `chromium`)"
)

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "sse-client.js"
MakeServer = Callable[..., Awaitable[RunningServer]]
OPEN = """token => {
  window.got = [];
  window.stream = openNotificationStream({
    getToken: async () => token,
    onEvent: (name, data) => window.got.push([name, data]),
  });
}"""


async def test_an_eventsource_with_a_ticket_resumes_after_a_server_restart(
    make_server: MakeServer, context: BrowserContext
) -> None:
    server = await make_server()
    other = await make_server()  # the same database: publishes while `server` is down
    page = await context.new_page()
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/stream?" in r.url else None)
    await page.goto(server.url + "/health/live")
    await page.add_script_tag(path=str(EXAMPLE))
    await page.evaluate(OPEN, server.token("erin"))

    async def seqs(count: int) -> list[int]:
        async with asyncio.timeout(30):
            while True:
                got = await page.evaluate("window.got")
                found = [data["seq"] for name, data in got if name == "notification"]
                if len(found) >= count:
                    return found
                await asyncio.sleep(0.1)

    async def wait_event(name: str, count: int) -> None:
        async with asyncio.timeout(30):
            while sum(1 for n, _ in await page.evaluate("window.got") if n == name) < count:
                await asyncio.sleep(0.1)

    await wait_event("open", 1)
    first = [(await server.publish(["erin"], title=t))[0] for t in ("one", "two")]
    assert await seqs(2) == [n["seq"] for n in first]

    await server.stop()
    await wait_event("reconnecting", 1)
    missed = (await other.publish(["erin"], title="during the restart"))[0]
    await server.start()
    await wait_event("recovery", 1)
    live = (await server.publish(["erin"], title="live again"))[0]
    expected = [n["seq"] for n in [*first, missed, live]]
    assert await seqs(4) == expected
    await asyncio.sleep(0.5)  # a duplicate would have arrived by now
    assert await seqs(4) == expected
    assert "ticket=" in streams[0] and "last_event_id" not in streams[0]
    resumed = streams[-1]
    assert f"last_event_id={first[-1]['seq']}" in resumed and "ticket=" in resumed
    await page.evaluate("window.stream.close()")
