"""The operators' page at /admin/ in headless Chromium against the real server: an admin token
signs in, live numbers move after a connect and a publish, a failed email is retried, a
notification's timeline opens, stale sessions are cleaned after a confirm; others are refused."""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from backend.security import SCOPE_ADMIN

from ..conftest import RunningServer
from ..email_helpers import register, worker_of
from ..servers import free_port
from .conftest import CHROMIUM
from .test_browser import DOCS, Tab

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (Debian package `chromium`)"
)


async def open_admin(browser: Browser, server: RunningServer, width: int = 1280) -> Tab:
    context = await browser.new_context(viewport={"width": width, "height": 1000})
    context.set_default_timeout(15_000)
    return await Tab(await context.new_page()).open(server.url + "/admin/")


async def paste_token(tab: Tab, token: str) -> None:
    await tab.page.get_by_label("JSON Web Token with the notifications:admin scope").fill(token)
    await tab.page.get_by_role("button", name="Use this token").click()


async def test_admin_page_shows_live_numbers_retries_an_email_opens_a_timeline_and_cleans_up(
    browser: Browser, make_server: Callable[..., Awaitable[RunningServer]], tmp_path: Path
) -> None:
    server = await make_server(
        dev_mode=True, email_worker_enabled=False, email_max_attempts=1,
        smtp_host="127.0.0.1", smtp_port=free_port(),  # nothing listens: the email fails
    )  # fmt: skip
    await register(server, "erin", "erin@example.com")
    await server.publish(["erin"], type="billing.invoice", title="Invoice #1042 is ready")
    assert await worker_of(server).drain() == 1
    status, body = await server.request(
        "GET", "/api/v1/admin/email-logs?status=failed", sub="ops", scopes=(SCOPE_ADMIN,)
    )
    [failed] = body["email_logs"]

    tab = await open_admin(browser, server)
    page = tab.page
    await paste_token(tab, server.token("ops", SCOPE_ADMIN))
    await expect(page.locator("#dashboard")).to_be_visible()
    await expect(page.locator("#live")).to_have_attribute("data-state", "connected")
    await expect(page.locator("#stat-connections")).to_have_text("0")
    await expect(page.locator("#stat-stored")).to_have_text("1")

    # Live: a client connects and three notifications are published; the page follows.
    await server.connect("alice")
    for title in ("Deploy to production finished", "Sam replied to your comment", "New task"):
        await server.publish(["alice"], type="deploy.finished", title=title)
    await expect(page.locator("#stat-connections")).to_have_text("1")
    await expect(page.locator("#stat-online")).to_have_text("1")
    await expect(page.locator("#stat-stored")).to_have_text("4")
    await expect(page.locator("#per-minute-summary")).to_contain_text("4 in the last 60 minutes")
    await expect(page.locator("#per-minute-chart rect.bar")).to_have_count(60)
    await expect(page.locator("#latency-emit .lat-value").first).not_to_have_text("–")

    # The failed email, with its reason, and its retry.
    row = page.locator(f'#failed-emails li[data-id="{failed["id"]}"]')
    await expect(row).to_contain_text("Invoice #1042 is ready")
    await expect(row.locator(".reason")).to_have_text(failed["failed_reason"])
    await expect(page.locator('#email-legend li[data-status="failed"] strong')).to_have_text("1")
    await page.mouse.move(5, 990)  # no hover highlight in the picture
    pictures = DOCS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
    await page.screenshot(path=str(pictures / "screenshot-admin.png"), full_page=True)
    await row.get_by_role("button", name=f"Retry email {failed['id']}").click()
    await expect(page.locator("#email-note")).to_have_text(
        f"Email #{failed['id']} is queued again."
    )
    await expect(row).to_have_count(0)
    await expect(page.locator('#email-legend li[data-status="queued"] strong')).to_have_text("1")
    status, body = await server.request(
        "GET", "/api/v1/admin/email-logs?status=queued", sub="ops", scopes=(SCOPE_ADMIN,)
    )
    assert [log["id"] for log in body["email_logs"]] == [failed["id"]]

    # Recent activity, and one notification's timeline on click.
    pushed = page.locator("#activity tr", has_text="alice").filter(has_text="pushed").first
    await expect(pushed).to_be_visible()
    number = await pushed.get_attribute("data-notification")
    await pushed.click()
    await expect(page.locator("#timeline-summary")).to_contain_text(f"#{number}")
    steps = page.locator("#timeline li strong")
    await expect(steps.first).to_have_text("created")
    await expect(steps.nth(1)).to_have_text("pushed")

    # Stale-session cleanup, after a confirm; Cancel does nothing.
    await page.get_by_label("Silent for more than").fill("0")
    await page.get_by_role("button", name="Clean up stale sessions…").click()
    await page.get_by_role("button", name="Cancel").click()
    await expect(page.locator("#cleanup-result")).to_have_text("")
    await page.get_by_role("button", name="Clean up stale sessions…").click()
    await page.get_by_role("button", name="Disconnect").click()
    await expect(page.locator("#cleanup-result")).to_have_text("Cleaned 1 stale session.")
    await expect(page.locator("#stat-connections")).to_have_text("0")
    tab.assert_no_script_errors()
    await page.context.close()


async def test_a_token_without_the_admin_scope_is_refused_with_a_clear_message(
    browser: Browser, server: RunningServer
) -> None:
    tab = await open_admin(browser, server)
    await paste_token(tab, server.token("alice", "notifications:publish"))
    error = tab.page.locator("#signin-error")
    await expect(error).to_contain_text("has no notifications:admin scope")
    await expect(tab.page.locator("#dashboard")).to_be_hidden()
    await paste_token(tab, "not-a-token")
    await expect(error).to_contain_text(re.compile(r"This token was refused: .+"))
    # The embedded default's development sign-in mints an admin token.
    await tab.page.get_by_role("button", name="Sign in as admin").click()
    await expect(tab.page.locator("#dashboard")).to_be_visible()
    await expect(tab.page.locator("#who")).to_have_text("ops")
    tab.assert_no_script_errors()
    await tab.page.context.close()


async def test_the_signed_in_operator_is_named_right_even_with_non_ascii_in_the_token(
    browser: Browser, server: RunningServer
) -> None:
    """The page reads the token's `sub` as UTF-8 (the shared auth.js reader), not as Latin-1:
    issuers that write raw UTF-8 in the payload (JavaScript's JSON.stringify does) are common."""
    now = int(time.time())
    claims = {"sub": "Zoë Ops 管理", "scope": SCOPE_ADMIN, "iat": now, "exp": now + 600}
    payload = json.dumps(claims, ensure_ascii=False).encode()
    segments = [
        base64.urlsafe_b64encode(part).rstrip(b"=")
        for part in (b'{"alg":"HS256","typ":"JWT"}', payload)
    ]
    signing_input = b".".join(segments)
    assert server.settings.jwt_secret is not None
    secret = server.settings.jwt_secret.get().encode()
    signature = base64.urlsafe_b64encode(hmac.digest(secret, signing_input, "sha256"))
    token = (signing_input + b"." + signature.rstrip(b"=")).decode()
    tab = await open_admin(browser, server)
    await paste_token(tab, token)
    await expect(tab.page.locator("#dashboard")).to_be_visible()
    await expect(tab.page.locator("#who")).to_have_text("Zoë Ops 管理")
    tab.assert_no_script_errors()
    await tab.page.context.close()


@pytest.mark.parametrize("width", [900, 1280])
async def test_admin_page_fits_without_horizontal_scroll_and_keeps_its_layout_while_polling(
    browser: Browser, server: RunningServer, width: int
) -> None:
    tab = await open_admin(browser, server, width)
    await paste_token(tab, server.token("ops", SCOPE_ADMIN))
    page = tab.page
    await expect(page.locator("#live")).to_have_attribute("data-state", "connected")
    overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    assert await page.evaluate(overflow) == 0
    cards = page.locator("#dashboard > section, #dashboard .tile")
    before = [await c.bounding_box() for c in await cards.all()]
    await server.connect("bob")
    await server.publish(["bob"], title="moves numbers, not boxes")
    await expect(page.locator("#stat-connections")).to_have_text("1")
    await expect(page.locator("#activity tr").first).to_be_visible()
    after = [await c.bounding_box() for c in await cards.all()]
    assert after == before
    tab.assert_no_script_errors()
    await page.context.close()
