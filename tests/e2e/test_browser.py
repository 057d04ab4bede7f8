"""The browser client in headless Chromium against the real server: sign in, live badge, read
state across tabs, recovery after going offline and after a server restart, preferences."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page, expect

from ..conftest import RunningServer, make_settings
from .conftest import CHROMIUM

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (Debian package `chromium`)"
)

DOCS = Path(__file__).resolve().parents[2] / "docs"


class Tab:
    """One page of the client, with the locators the tests use and a watch on script errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: (
                self.errors.append(f"{msg.text} ({msg.location.get('url')})")
                if msg.type == "error"
                else None
            ),
        )
        self.bell = page.locator("#bell")
        self.badge = page.locator("#badge")
        self.panel = page.get_by_role("dialog", name="Notifications")
        self.items = page.locator("#feed article")
        self.connection = page.locator("#connection")

    def item(self, title: str):  # noqa: ANN201 - a Playwright Locator
        return self.items.filter(has_text=title)

    async def open(self, url: str) -> Tab:
        await self.page.goto(url)
        await expect(self.page.locator("body[data-ready=true]")).to_be_attached()
        return self

    async def dev_sign_in(self, user: str, name: str = "") -> None:
        await self.page.get_by_label("User name").fill(user)
        if name:
            await self.page.get_by_label("Display name").fill(name)
        await self.page.get_by_role("button", name="Sign in", exact=True).click()
        await self.expect_state("connected")

    async def expect_state(self, state: str, timeout: float = 15_000) -> None:
        await expect(self.connection).to_have_attribute("data-state", state, timeout=timeout)

    async def expect_unread(self, count: int) -> None:
        if count == 0:
            await expect(self.badge).to_be_hidden()
            await expect(self.bell).to_have_attribute("aria-label", "Notifications, none unread")
        else:
            await expect(self.badge).to_be_visible()
            await expect(self.badge).to_have_text(str(count))
            await expect(self.bell).to_have_attribute(
                "aria-label", f"Notifications, {count} unread"
            )

    async def open_panel(self) -> None:
        if not await self.panel.is_visible():
            await self.bell.click()
        await expect(self.panel).to_be_visible()
        await expect(self.page.locator("#feed")).to_have_attribute("aria-busy", "false")

    def assert_no_script_errors(self) -> None:
        """Uncaught exceptions and console errors; failed requests are logged by the browser, and expected here."""
        network = ("Failed to load resource:", "WebSocket connection to")
        assert [e for e in self.errors if not e.startswith(network)] == []


def watch_syncs(page: Page) -> list[Any]:
    """The payloads of the `sync` events the page sends, by websocket or long-polling POST."""
    sent: list[Any] = []

    def record(text: str | bytes) -> None:
        for packet in text.split("\x1e") if isinstance(text, str) else []:
            match = re.fullmatch(r"42\d*(\[.*\])", packet, re.S)
            if match and (event := json.loads(match.group(1)))[0] == "sync":
                sent.append(event[1])

    page.on("websocket", lambda ws: ws.on("framesent", record))
    page.on(
        "request",
        lambda r: (
            record(r.post_data or "") if "/socket.io/" in r.url and r.method == "POST" else None
        ),
    )
    return sent


async def new_tab(context: BrowserContext, server: RunningServer) -> Tab:
    return await Tab(await context.new_page()).open(server.url)


async def test_sign_in_live_badge_and_read_state_in_two_tabs(
    server: RunningServer, context: BrowserContext
) -> None:
    first = await new_tab(context, server)
    await expect(first.page.get_by_role("heading", name="Development sign-in")).to_be_visible()
    await first.dev_sign_in("alice", "Alice")
    await expect(first.page.get_by_role("heading", name="Hello, Alice")).to_be_visible()
    await first.expect_unread(0)

    await server.publish(["alice"], title="Build finished", body="main is green")
    await first.expect_unread(1)
    await expect(first.page.locator("#toasts")).to_contain_text("Build finished")

    # The second tab shares the token (localStorage) and the server's state.
    second = await new_tab(context, server)
    await second.expect_state("connected")
    await second.expect_unread(1)
    await second.open_panel()
    await expect(second.item("Build finished")).to_have_class("item unread")

    await first.open_panel()
    item = first.item("Build finished")
    await expect(item).to_have_count(1)
    await expect(item).to_contain_text("just now")
    await item.locator(".item-body").click()
    await first.expect_unread(0)
    await expect(item).to_have_class("item")

    await second.expect_unread(0)
    await expect(second.item("Build finished")).to_have_class("item")

    # Esc closes the panel and gives the focus back to the bell.
    await first.page.keyboard.press("Escape")
    await expect(first.panel).to_be_hidden()
    await expect(first.bell).to_be_focused()

    # The test button publishes to the signed-in user with the dev token's scope.
    await first.page.get_by_role("button", name="Send me a test notification").click()
    await first.expect_unread(1)
    await second.expect_unread(1)
    await expect(second.item("Test notification")).to_have_count(1)

    # Mark all read in one tab, delete in the other.
    await first.open_panel()
    await first.page.get_by_role("button", name="Mark all read").click()
    await first.expect_unread(0)
    await second.expect_unread(0)
    await second.item("Build finished").get_by_role("button", name="Delete").click()
    await expect(second.item("Build finished")).to_have_count(0)
    await expect(first.item("Build finished")).to_have_count(0)
    await expect(first.items).to_have_count(1)

    first.assert_no_script_errors()
    second.assert_no_script_errors()


async def test_offline_then_back_recovers_missed_notification_once(
    server: RunningServer, context: BrowserContext
) -> None:
    tab = await new_tab(context, server)
    await tab.dev_sign_in("bob")
    await server.publish(["bob"], title="Before going offline")
    await tab.expect_unread(1)
    await tab.open_panel()
    await expect(tab.items).to_have_count(1)

    await context.set_offline(True)
    await tab.expect_state("offline")
    await server.publish(["bob"], title="Missed while offline")
    await asyncio.sleep(1.0)
    await expect(tab.item("Missed while offline")).to_have_count(0)

    await context.set_offline(False)
    await tab.expect_state("connected", timeout=30_000)
    await expect(tab.item("Missed while offline")).to_have_count(1)
    await tab.expect_unread(2)
    await asyncio.sleep(1.0)  # anything sent twice would have arrived by now
    await expect(tab.item("Missed while offline")).to_have_count(1)
    await expect(tab.items).to_have_count(2)
    tab.assert_no_script_errors()


async def test_server_restart_recovers_missed_notification_once(
    server: RunningServer, context: BrowserContext
) -> None:
    tab = await new_tab(context, server)
    await tab.dev_sign_in("carol")
    for title in ("One", "Two"):
        await server.publish(["carol"], title=title)
    await tab.expect_unread(2)

    await server.stop()
    await tab.expect_state("reconnecting")
    # Keep the page from reconnecting until the notification exists: it must come by last_seq.
    await context.set_offline(True)
    await server.start()
    await server.publish(["carol"], title="Sent during the restart")
    await context.set_offline(False)
    await tab.expect_state("connected", timeout=30_000)

    await tab.open_panel()
    await expect(tab.item("Sent during the restart")).to_have_count(1)
    await tab.expect_unread(3)
    await asyncio.sleep(1.0)
    await expect(tab.items).to_have_count(3)
    await expect(tab.item("Sent during the restart")).to_have_count(1)
    tab.assert_no_script_errors()


async def test_infinite_scroll_keyboard_and_screenshots(
    server: RunningServer, context: BrowserContext, tmp_path: Path
) -> None:
    # Stored before the page opens, so the list comes from REST one page at a time.
    for number in range(1, 41):
        await server.publish(["dana"], type="bulk", title=f"Older notification {number}")
    samples = [
        ("billing.invoice", "Invoice #1042 is ready", "€120.00, due on 1 December", None),
        ("comment.reply", "Sam replied to your comment", "“Looks good to me, merging.”", None),
        ("deploy.finished", "Deploy to production finished", "v2.4.1 is live", "/#deploys"),
        ("task.assigned", "You have a new task", "Review the Q4 roadmap", "/#tasks/7"),
    ]
    for kind, title, body, action in samples:
        await server.publish(
            ["dana"], type=kind, title=title, body=body, action_url=action, icon="/img/favicon.svg"
        )
    tab = await new_tab(context, server)
    await tab.dev_sign_in("dana", "Dana")
    await tab.expect_unread(44)

    await tab.open_panel()
    await expect(tab.items).to_have_count(20)
    # Newest first.
    await expect(tab.items.first).to_contain_text("You have a new task")
    # Keyboard: the first item has the focus, arrows move, Enter marks read.
    await expect(tab.items.first).to_be_focused()
    await tab.page.keyboard.press("ArrowDown")
    await expect(tab.items.nth(1)).to_be_focused()
    await tab.page.keyboard.press("Enter")
    await tab.expect_unread(43)
    await tab.item("Invoice #1042").click(position={"x": 200, "y": 10})
    await tab.expect_unread(42)

    # The pictures in docs/ are refreshed only on request; a plain run leaves the tree clean.
    pictures = DOCS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
    pictures.mkdir(exist_ok=True)
    await tab.page.mouse.move(5, 740)  # no hover highlight in the picture
    await tab.page.screenshot(path=str(pictures / "screenshot-panel.png"))

    # Infinite scroll: scrolling to the end brings the next pages through the cursor API.
    for expected in (40, 44):
        await tab.items.last.scroll_into_view_if_needed()
        await expect(tab.items).to_have_count(expected)
    await expect(tab.items.last).to_contain_text("Older notification 1")
    await expect(tab.page.get_by_role("button", name="Load older notifications")).to_be_hidden()

    # A narrow phone screen: the panel becomes a sheet as wide as the screen.
    await tab.page.set_viewport_size({"width": 375, "height": 740})
    box = await tab.panel.bounding_box()
    assert box is not None and box["width"] == pytest.approx(375, abs=1)
    await tab.items.first.scroll_into_view_if_needed()
    await tab.page.screenshot(path=str(pictures / "screenshot-phone.png"))
    tab.assert_no_script_errors()


async def test_preferences_saved_and_errors_shown(
    server: RunningServer, context: BrowserContext
) -> None:
    tab = await new_tab(context, server)
    await tab.dev_sign_in("erin")
    await server.publish(["erin"], type="marketing", title="Our new plans")
    await tab.expect_unread(1)

    page = tab.page
    await page.get_by_role("button", name="Notification preferences").click()
    dialog = page.get_by_role("dialog", name="Notification preferences")
    await expect(dialog).to_be_visible()
    await expect(page.get_by_label("Show notifications here")).to_be_checked()
    await page.get_by_label("How often").select_option("daily")
    await page.get_by_label("Email for marketing").select_option("never")
    await page.get_by_label("In-app for marketing").select_option("off")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#prefs-status")).to_have_text("Saved.")

    status, body = await server.request("GET", "/api/v1/preferences", sub="erin")
    assert status == 200
    assert body["digest_frequency"] == "daily"
    assert body["type_settings"]["marketing"] == {"email": "never", "in_app": False}

    await page.get_by_label("Time zone").fill("Mars/Olympus_Mons")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#prefs-errors")).to_contain_text("unknown timezone")
    await expect(page.get_by_label("Time zone")).to_have_attribute("aria-invalid", "true")

    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    tab.assert_no_script_errors()


async def test_pasted_token_when_dev_sign_in_is_off(
    context: BrowserContext, tmp_path: Path
) -> None:
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'prod.db'}", tmp_path)
    server = RunningServer(settings)
    await server.start()
    try:
        tab = await new_tab(context, server)
        await expect(tab.page.get_by_role("heading", name="Use a token")).to_be_visible()
        await expect(tab.page.locator("#dev-form")).to_be_hidden()

        await tab.page.get_by_label("JSON Web Token").fill("not-a-token")
        await tab.page.get_by_role("button", name="Use this token").click()
        await expect(tab.page.locator("#signin-error")).to_contain_text("not a JWT")

        await tab.page.get_by_label("JSON Web Token").fill(server.token("frank", name="Frank"))
        await tab.page.get_by_role("button", name="Use this token").click()
        await tab.expect_state("connected")
        # Without the publish scope the test button explains why it is off.
        await expect(
            tab.page.get_by_role("button", name="Send me a test notification")
        ).to_be_disabled()
        await server.publish(["frank"], title="Hello Frank")
        await tab.expect_unread(1)

        # A token the server refuses sends the page back to the sign-in with the reason.
        await tab.page.get_by_role("button", name="Sign out").click()
        await expect(tab.page.get_by_role("heading", name="Use a token")).to_be_visible()
        forged = server.token("frank")[:-4] + "AAAA"
        await tab.page.get_by_label("JSON Web Token").fill(forged)
        await tab.page.get_by_role("button", name="Use this token").click()
        await expect(tab.page.locator("#signin-error")).to_contain_text("refused your token")

        # A token that runs out while the page is open signs it out, saying so.
        short = server.verifier.issue("frank", ttl_seconds=3)
        await tab.page.get_by_label("JSON Web Token").fill(short)
        await tab.page.get_by_role("button", name="Use this token").click()
        await tab.expect_state("connected")
        await expect(tab.page.locator("#signin-error")).to_contain_text("expired", timeout=10_000)
        await expect(tab.page.get_by_role("heading", name="Use a token")).to_be_visible()
        tab.errors = [e for e in tab.errors if "401" not in e]
        tab.assert_no_script_errors()
    finally:
        await server.close()


async def test_a_burst_over_the_outbound_limit_ends_complete_in_the_inbox(
    make_server: Callable[..., Awaitable[RunningServer]], context: BrowserContext
) -> None:
    # 5 a second: a burst of 60 is mostly coalesced into `unread_count {missed}`, and whatever
    # the bucket lets through as it refills leaves seq gaps; the page must sync both ways.
    server = await make_server(dev_mode=True, outbound_rate_per_second=5.0)
    tab = Tab(await context.new_page())
    syncs = watch_syncs(tab.page)
    await tab.open(server.url)
    await tab.dev_sign_in("frank")
    # Once a live one is shown, the connect's recovery is over: the burst meets the limit.
    await server.publish(["frank"], title="Warm-up")
    await tab.expect_unread(1)

    titles = [f"Burst {number}" for number in range(1, 61)]
    # One at a time, so the bucket refills during the burst: several rounds of `missed`.
    for title in titles:
        await server.publish(["frank"], title=title)
    await tab.expect_unread(61)
    # The panel stays closed: nothing is fetched over REST, everything came by the socket.
    await expect(tab.items).to_have_count(61)
    await asyncio.sleep(1.0)  # anything sent twice would have arrived by now
    await expect(tab.items).to_have_count(61)
    shown = await tab.page.locator("#feed article .item-title").all_text_contents()
    assert sorted(text.removeprefix("Unread: ") for text in shown) == sorted([*titles, "Warm-up"])
    assert syncs  # the limit did cut the burst short: the rest came back through sync
    tab.assert_no_script_errors()


async def test_a_seq_hole_costs_the_page_one_sync_not_a_loop(
    server: RunningServer, context: BrowserContext
) -> None:
    status, _ = await server.request(
        "PUT", "/api/v1/preferences", sub="gina",
        json={"type_settings": {"muted": {"in_app": False}}},
    )  # fmt: skip
    assert status == 200
    tab = Tab(await context.new_page())
    syncs = watch_syncs(tab.page)
    await tab.open(server.url)
    await tab.dev_sign_in("gina")
    await server.publish(["gina"], title="One")  # seq 1
    await tab.expect_unread(1)
    # Seq 2 is stored but never shown: seq 3 arrives after a gap that a sync cannot fill.
    await server.publish(["gina"], type="muted", title="Muted")
    await server.publish(["gina"], title="Three")
    await expect(tab.items).to_have_count(2)
    async with asyncio.timeout(15):
        while not syncs:
            await asyncio.sleep(0.05)
    # Its ack moved the page past the hole: the next one is no gap, and nothing loops.
    await server.publish(["gina"], title="Four")
    await tab.expect_unread(3)
    await asyncio.sleep(1.0)
    assert syncs == [{"after_seq": 1}]
    shown = await tab.page.locator("#feed article .item-title").all_text_contents()
    assert [text.removeprefix("Unread: ") for text in shown] == ["Four", "Three", "One"]
    tab.assert_no_script_errors()
