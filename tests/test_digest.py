"""Digests with a controllable clock: local period boundaries, unread only, never twice."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend import keys, migrate
from backend.config import Settings
from backend.db import create_engine, create_sessionmaker
from backend.email.policy import last_window
from backend.email.worker import EmailWorker
from backend.models import Notification, utcnow
from backend.schemas import PreferencesUpdate
from backend.services.digests import plan_digests, queue_digests
from backend.services.preferences import update_preferences
from backend.services.users import upsert_user

from .conftest import TEST_SECRET, RunningServer, make_settings
from .email_helpers import Inbox, add_notification, inbox, logs, parts

__all__ = ["inbox"]  # fixture
ROOT = Path(__file__).resolve().parent.parent


def at(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass
class Db:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]

    async def user(self, user_id: str, email: str | None, **prefs: Any) -> None:
        async with self.sessionmaker.begin() as session:
            await upsert_user(session, user_id=user_id, email=email, name=None)
        if prefs:
            await update_preferences(
                sessionmaker=self.sessionmaker, user_id=user_id, update=PreferencesUpdate(**prefs)
            )

    async def note(self, user_id: str, when: str, title: str, **fields: Any) -> int:
        return await add_notification(
            self.sessionmaker, user_id, created_at=at(when), title=title, **fields
        )

    async def plans(self, period: str, now: str) -> dict[str, tuple[str, list[str]]]:
        """user -> (window label, titles newest first) of what is due and not yet queued."""
        async with self.sessionmaker() as session:
            found = await plan_digests(session, period=period, now=at(now))
        return {p.user_id: (p.window.label, p.titles) for p in found}

    def worker(self) -> EmailWorker:
        return EmailWorker(sessionmaker=self.sessionmaker, settings=self.settings)


@pytest.fixture
async def db(database_url: str, tmp_path: Path, inbox: Inbox) -> AsyncIterator[Db]:
    settings = make_settings(
        database_url, tmp_path, smtp_host="127.0.0.1", smtp_port=inbox.port,
        app_url="https://app.example",
    )  # fmt: skip
    engine = create_engine(settings)
    await migrate.upgrade(engine)
    try:
        yield Db(settings, create_sessionmaker(engine))
    finally:
        await engine.dispose()


async def test_daily_at_the_users_local_hour_newest_first_read_left_out_never_twice(
    db: Db, inbox: Inbox
) -> None:
    await db.user("alice", "alice@example.com", digest_frequency="daily",
                  timezone="Europe/Paris", digest_hour=9)  # fmt: skip
    await db.note("alice", "2026-11-22T07:59:59", "before the window")
    await db.note("alice", "2026-11-22T08:00:00", "first")  # 09:00 in Paris
    await db.note("alice", "2026-11-22T12:00:00", "already read", read=True)
    await db.note("alice", "2026-11-23T07:59:59", "last")
    await db.note("alice", "2026-11-23T08:00:00", "next period")

    # 08:59:59 in Paris: the last complete day is still the one before
    assert await db.plans("daily", "2026-11-23T07:59:59") == {
        "alice": ("2026-11-22", ["before the window"])
    }
    assert await db.plans("daily", "2026-11-23T08:00:00") == {
        "alice": ("2026-11-23", ["last", "first"])
    }
    [queued] = await queue_digests(db.sessionmaker, period="daily", now=at("2026-11-23T08:00:00"))
    assert queued.key.startswith("daily:2026-11-23:")
    # a second run in the same period, a restart, or a concurrent worker: nothing more
    for now in ("2026-11-23T08:00:00", "2026-11-23T20:00:00", "2026-11-24T07:59:00"):
        assert await queue_digests(db.sessionmaker, period="daily", now=at(now)) == []
    assert await db.worker().drain(now=at("2026-11-23T08:00:01")) == 1

    [(rcpt, message)] = inbox.messages
    assert rcpt == ["alice@example.com"]
    assert message["Subject"] == "Your daily digest: 2 unread notifications"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = parts(message)["text/plain"]
    assert text.index("last") < text.index("first")
    assert "already read" not in text and "next period" not in text and "before" not in text
    assert "https://app.example/" in parts(message)["text/html"]
    [row] = await logs(db.sessionmaker)
    assert (row.kind, row.status, row.notification_id) == ("digest", "sent", None)


async def test_concurrent_runs_queue_one_digest(db: Db) -> None:
    await db.user("alice", "alice@example.com", digest_frequency="daily")
    await db.note("alice", "2026-11-22T10:00:00", "one")
    engines = [create_engine(db.settings) for _ in range(2)]  # as two processes would
    try:
        results = await asyncio.gather(
            *(
                queue_digests(create_sessionmaker(e), period="daily", now=at("2026-11-23T09:00"))
                for e in engines
            )
        )
    finally:
        for engine in engines:
            await engine.dispose()
    assert sorted(len(r) for r in results) == [0, 1]
    assert len(await logs(db.sessionmaker)) == 1


async def test_hourly_in_a_half_hour_timezone_capped_with_and_n_more(db: Db, inbox: Inbox) -> None:
    await db.user("carol", "carol@example.com", digest_frequency="hourly",
                  timezone="Asia/Kolkata")  # fmt: skip
    await db.note("carol", "2026-11-23T09:29:59", "previous hour")
    start = at("2026-11-23T09:30:00")  # 15:00 in Kolkata
    for i in range(12):
        await db.note("carol", (start + timedelta(minutes=5 * i)).isoformat(), f"item {i}")
    await db.note("carol", "2026-11-23T10:30:00", "next hour")
    assert await db.plans("hourly", "2026-11-23T10:29:59") == {
        "carol": ("2026-11-23T09:30Z", ["previous hour"])
    }
    label, titles = (await db.plans("hourly", "2026-11-23T10:30:00"))["carol"]
    assert label == "2026-11-23T10:30Z" and titles == [f"item {i}" for i in reversed(range(12))]
    await queue_digests(db.sessionmaker, period="hourly", now=at("2026-11-23T10:30:00"))
    assert await db.worker().drain(now=at("2026-11-23T10:30:05")) == 1
    [(_, message)] = inbox.messages
    assert message["Subject"] == "Your hourly digest: 12 unread notifications"
    text = parts(message)["text/plain"]
    assert "item 11" in text and "item 2" in text and "item 1\n" not in text
    assert "and 2 more" in text and "and 2 more" in parts(message)["text/html"]


async def test_weekly_on_monday_at_the_users_hour_in_new_york(db: Db) -> None:
    await db.user("bob", "bob@example.com", digest_frequency="weekly",
                  timezone="America/New_York", digest_hour=8)  # fmt: skip
    await db.note("bob", "2026-11-16T12:59:00", "week before")  # Mon 07:59 in New York
    await db.note("bob", "2026-11-16T13:00:00", "monday")  # Mon 08:00
    await db.note("bob", "2026-11-23T12:59:00", "sunday night and then some")
    assert await db.plans("weekly", "2026-11-23T12:59:59") == {
        "bob": ("2026-11-16", ["week before"])
    }
    assert await db.plans("weekly", "2026-11-23T13:00:00") == {
        "bob": ("2026-11-23", ["sunday night and then some", "monday"])
    }
    assert await db.plans("weekly", "2026-11-29T23:00:00") == {
        "bob": ("2026-11-23", ["sunday night and then some", "monday"])
    }
    assert await db.plans("daily", "2026-11-23T13:00:00") == {}


async def test_nothing_unread_no_email_no_address_skipped_and_per_type_digests(
    db: Db, inbox: Inbox
) -> None:
    await db.user("frank", "frank@example.com", digest_frequency="daily")
    await db.note("frank", "2026-11-22T10:00", "read", read=True)
    await db.user("dave", None, digest_frequency="daily")
    await db.note("dave", "2026-11-22T10:00", "for nobody")
    per_type = {"news": {"email": "daily"}, "spam": {"email": "never"}}
    await db.user("erin", "erin@example.com", digest_frequency="immediate", type_settings=per_type)
    await db.note("erin", "2026-11-22T10:00", "headline", type="news")
    await db.note("erin", "2026-11-22T11:00", "not a digest item", type="task")
    await db.note("erin", "2026-11-22T12:00", "never", type="spam")

    queued = await queue_digests(db.sessionmaker, period="daily", now=at("2026-11-23T09:00"))
    assert sorted(p.user_id for p in queued) == ["dave", "erin"]
    assert await db.worker().drain(now=at("2026-11-23T09:00:01")) == 1
    rows = {r.user_id: r for r in await logs(db.sessionmaker)}
    assert (rows["dave"].status, rows["dave"].failed_reason) == ("skipped", "no email address")
    assert rows["erin"].status == "sent"
    assert rows["erin"].payload and rows["erin"].payload["unsubscribe"] == {
        "all": False, "types": ["news"],
    }  # fmt: skip
    [(_, message)] = inbox.messages
    text = parts(message)["text/plain"]
    assert "headline" in text and "not a digest item" not in text and "never" not in text


async def test_a_digest_read_before_sending_is_skipped(db: Db, inbox: Inbox) -> None:
    await db.user("alice", "alice@example.com", digest_frequency="daily")
    note = await db.note("alice", "2026-11-22T10:00", "soon read")
    await queue_digests(db.sessionmaker, period="daily", now=at("2026-11-23T09:00"))
    async with db.sessionmaker.begin() as session:
        row = await session.get(Notification, note)
        assert row is not None
        row.read = True
    assert await db.worker().drain(now=at("2026-11-23T09:00:01")) == 1
    [row] = await logs(db.sessionmaker)
    assert row.status == "skipped" and row.failed_reason and "read" in row.failed_reason
    assert inbox.messages == []


@pytest.mark.parametrize(
    ("now", "hours"), [("2026-03-29T12:00", 23), ("2026-10-25T12:00", 25), ("2026-11-23T12:00", 24)]
)
def test_a_daily_window_follows_local_time_across_dst(now: str, hours: int) -> None:
    window = last_window("daily", now=at(now), zone=ZoneInfo("Europe/Paris"), digest_hour=9)
    assert window.end - window.start == timedelta(hours=hours)
    assert window.end.astimezone(ZoneInfo("Europe/Paris")).hour == 9


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_cli_digest_dry_run_shows_who_would_get_what_and_queues_nothing(
    db: Db, tmp_path: Path
) -> None:
    await db.user("alice", "alice@example.com", digest_frequency="daily")
    await db.note("alice", "2026-11-22T10:00", "first")
    await db.note("alice", "2026-11-22T11:00", "second")
    env = {**os.environ, "DATABASE_URL": db.settings.database_url, "JWT_SECRET": TEST_SECRET}

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "backend", "digest", "--period", "daily", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return done.stdout

    out = await asyncio.to_thread(cli, "--dry-run", "--at", "2026-11-23T09:30:00Z")
    assert "would send 1" in out
    assert "alice <alice@example.com>: 2 unread, 2026-11-22 09:00Z..2026-11-23 09:00Z" in out
    assert out.index("  - second") < out.index("  - first")
    assert await logs(db.sessionmaker) == []
    out = await asyncio.to_thread(cli, "--at", "2026-11-23T09:30:00Z")
    assert "queued 1" in out
    out = await asyncio.to_thread(cli, "--at", "2026-11-23T10:30:00Z")
    assert "queued 0" in out
    assert [r.kind for r in await logs(db.sessionmaker)] == ["digest"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_server_schedules_and_sends_digests_by_itself(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, email_poll_seconds=0.05)
    server = RunningServer(settings)
    await server.start()
    try:
        db = Db(settings, server.app[keys.SESSIONMAKER])
        await db.user("carol", "carol@example.com", digest_frequency="hourly")
        await add_notification(
            db.sessionmaker, "carol", created_at=utcnow() - timedelta(hours=1), title="last hour"
        )
        await server.stop()  # a restart: the worker checks digests as it starts
        await server.start()
        async with asyncio.timeout(10):
            while not list((tmp_path / "outbox").glob("*.eml")):
                await asyncio.sleep(0.05)
        [row] = await logs(server.app[keys.SESSIONMAKER])
        assert (row.kind, row.status) == ("digest", "sent")
    finally:
        await server.close()
