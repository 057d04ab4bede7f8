"""Browser fixtures: the real server on SQLite in development mode, headless Debian Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, async_playwright, expect

from backend.config import Settings

from ..conftest import make_settings

CHROMIUM = Path("/usr/bin/chromium")
# Two cores shared with the rest of the suite: generous waits, which cost nothing when green.
expect.set_options(timeout=15_000)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def database_url(tmp_path: Path) -> str:
    """The page is the same on both databases; the browser tests use the embedded default."""
    return f"sqlite+aiosqlite:///{tmp_path / 'e2e.db'}"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Development mode, as on the embedded default, so the page offers the dev sign-in."""
    return make_settings(database_url, tmp_path, dev_mode=True)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    playwright = await async_playwright().start()
    try:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()
    finally:
        await playwright.stop()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """One browser profile: its tabs share localStorage, like two tabs of one person."""
    context = await browser.new_context(viewport={"width": 1100, "height": 760})
    context.set_default_timeout(15_000)
    try:
        yield context
    finally:
        await context.close()
