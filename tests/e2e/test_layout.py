"""The page at common desktop sizes: the sign-in card above the fold, buttons on one line,
toasts that show their whole text (issue 14 item 7)."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Locator, expect

from ..conftest import RunningServer
from .conftest import CHROMIUM
from .test_browser import Tab

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (Debian package `chromium`)"
)


async def one_line(locator: Locator) -> bool:
    """True when the element's text is laid out on a single line."""
    return bool(
        await locator.evaluate(
            "e => { const tops = new Set();"
            " const walk = document.createTreeWalker(e, NodeFilter.SHOW_TEXT);"
            " while (walk.nextNode()) { if (!walk.currentNode.textContent.trim()) continue;"
            "  const r = document.createRange(); r.selectNodeContents(walk.currentNode);"
            "  for (const x of r.getClientRects()) tops.add(Math.round(x.top / 4)); }"
            " return tops.size === 1; }"
        )
    )


@pytest.mark.parametrize("viewport", [(1280, 800), (900, 900), (1440, 900)])
async def test_sign_in_card_fits_above_the_fold(
    browser: Browser, server: RunningServer, viewport: tuple[int, int]
) -> None:
    width, height = viewport
    context = await browser.new_context(viewport={"width": width, "height": height})
    try:
        tab = await Tab(await context.new_page()).open(server.url)
        card = tab.page.locator("#signin")
        await expect(tab.page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
        box = await card.bounding_box()
        assert box is not None
        assert box["y"] + box["height"] <= height, f"the sign-in card ends at {box} in {viewport}"
        tab.assert_no_script_errors()
    finally:
        await context.close()


async def test_home_buttons_do_not_wrap_and_toasts_show_their_text_at_1280(
    browser: Browser, server: RunningServer
) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        tab = await Tab(await context.new_page()).open(server.url)
        await tab.dev_sign_in("layout-user")
        for name in ("Send me a test notification", "Notification preferences"):
            button = tab.page.get_by_role("button", name=name)
            await expect(button).to_be_visible()
            assert await one_line(button), f"{name!r} wraps at 1280 px"
        body = "A longer body than the toast has room for on one line, so that it must wrap"
        await server.publish(user_ids=["layout-user"], type="layout", title="Toast", body=body)
        text = tab.page.locator(".toast-text span").filter(has_text="A longer body")
        await expect(text).to_be_visible()
        clipped = await text.evaluate(
            "e => e.scrollHeight > e.clientHeight + 1 || e.scrollWidth > e.clientWidth + 1"
        )
        assert not clipped, "the toast cuts its text"
        tab.assert_no_script_errors()
    finally:
        await context.close()
