"""Delivery receipts from real browsers: the page (static/js/realtime.js, over Socket.IO) and the
documented EventSource example (docs/examples/sse-client.js, over REST) acknowledge what arrived,
batched, and the server records delivered_at; what no device got stays undelivered."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from playwright.async_api import BrowserContext

from ..conftest import SCOPE_ADMIN, SCOPE_PUBLISH, RunningServer
from .conftest import CHROMIUM
from .test_browser import new_tab
from .test_sse_browser import EXAMPLE, OPEN  # the SSE example page, opened the same way

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (Debian package `chromium`)"
)


async def inbox(server: RunningServer, user: str) -> dict[int, dict[str, Any]]:
    status, body = await server.request("GET", "/api/v1/notifications?limit=100", sub=user)
    assert status == 200, body
    return {note["id"]: note for note in body["notifications"]}


async def wait_delivered(server: RunningServer, user: str, ids: list[int]) -> dict[int, Any]:
    """The user's inbox once every one of `ids` has delivered_at (bounded: 30 s, 300 polls)."""
    async with asyncio.timeout(30):
        for _ in range(300):
            notes = await inbox(server, user)
            if all(notes[i]["delivered_at"] for i in ids):
                return notes
            await asyncio.sleep(0.1)
    raise AssertionError(f"not delivered: {ids}")


async def steps(server: RunningServer, notification_id: int) -> list[dict[str, Any]]:
    path = f"/api/v1/admin/notifications/{notification_id}/activity"
    status, body = await server.request("GET", path, sub="ops", scopes=(SCOPE_ADMIN,))
    assert status == 200, body
    return body["activity"]  # type: ignore[no-any-return]


async def test_the_pages_receipts_set_delivered_at_and_unreceived_ones_stay_undelivered(
    server: RunningServer, context: BrowserContext
) -> None:
    tab = await new_tab(context, server)
    await tab.dev_sign_in("dora")
    [got] = await server.publish(["dora"], title="Seen by the page")
    [absent] = await server.publish(["nobody-online"], title="No device has it")
    await tab.expect_unread(1)

    notes = await wait_delivered(server, "dora", [got["id"]])
    assert notes[got["id"]]["read_at"] is None  # delivered is not read
    delivered = [s for s in await steps(server, got["id"]) if s["kind"] == "delivered"]
    assert [s["detail"]["via"] for s in delivered] == ["socket"]
    await asyncio.sleep(0.5)  # a receipt for the other user's would have come by now
    assert (await inbox(server, "nobody-online"))[absent["id"]]["delivered_at"] is None
    tab.assert_no_script_errors()


async def test_the_sse_example_acknowledges_over_rest_in_batches(
    server: RunningServer, context: BrowserContext
) -> None:
    page = await context.new_page()
    receipts: list[list[int]] = []
    page.on(
        "request",
        lambda r: (
            receipts.append(json.loads(r.post_data or "{}")["seqs"])
            if r.url.endswith("/api/v1/notifications/received") and r.method == "POST"
            else None
        ),
    )
    await page.goto(server.url + "/health/live")
    await page.add_script_tag(path=str(EXAMPLE))
    await page.evaluate(OPEN, server.token("erin"))
    async with asyncio.timeout(30):
        while not any(name == "open" for name, _ in await page.evaluate("window.got")):
            await asyncio.sleep(0.1)

    # five notifications in one publish request: they arrive together and share a receipt
    items = [{"user_ids": ["erin"], "type": "test", "title": f"n{i}"} for i in range(5)]
    status, answer = await server.request(
        "POST", "/api/v1/notifications/batch", json={"items": items},
        sub="publisher", scopes=(SCOPE_PUBLISH,),
    )  # fmt: skip
    assert status == 201, answer
    sent = [r["notifications"][0] for r in answer["results"]]
    [unreceived] = await server.publish(["someone-else"], title="not erin's")

    notes = await wait_delivered(server, "erin", [n["id"] for n in sent])
    assert all(notes[n["id"]]["read_at"] is None for n in sent)
    for note in sent:
        delivered = [s for s in await steps(server, note["id"]) if s["kind"] == "delivered"]
        assert [s["detail"]["via"] for s in delivered] == ["rest"]
    assert sorted(seq for batch in receipts for seq in batch) == sorted(n["seq"] for n in sent)
    assert len(receipts) < len(sent)  # batched, not one request per notification
    assert (await inbox(server, "someone-else"))[unreceived["id"]]["delivered_at"] is None
    await page.evaluate("window.stream.close()")
