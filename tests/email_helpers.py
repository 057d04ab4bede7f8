"""A real SMTP server (aiosmtpd on loopback) and small factories for the email tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend import keys, migrate
from backend.db import create_engine, create_sessionmaker
from backend.email.worker import EmailWorker
from backend.models import EmailLog, Notification, User, utcnow
from backend.schemas import Preferences
from backend.services.emails import queue_immediate
from backend.services.users import upsert_user

from .conftest import SCOPE_ADMIN, RunningServer, make_settings
from .servers import free_port

APP_URL = "https://app.example"


class Inbox:
    """Collects what an aiosmtpd server accepts; `refuse` makes it answer RCPT with that line."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.raw: list[bytes] = []  # as received, before any re-serialisation
        self.refuse: str | None = None
        self.delay = 0.0  # seconds per message, to make concurrent senders overlap
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def handle_RCPT(  # aiosmtpd's hook names
        self, _server: Any, _session: Any, envelope: Any, address: str, _options: Any
    ) -> str:
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.messages.append((list(envelope.rcpt_tos), message))
            self.raw.append(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


def parts(message: EmailMessage) -> dict[str, str]:
    """content type -> decoded text of each leaf part."""
    found: dict[str, str] = {}
    for part in message.walk():
        if not part.is_multipart():
            found[part.get_content_type()] = part.get_content()
    return found


async def logs(sessionmaker: async_sessionmaker[AsyncSession]) -> list[EmailLog]:
    async with sessionmaker() as session:
        return list(await session.scalars(select(EmailLog).order_by(EmailLog.id)))


async def one_email_queued(
    tmp_path: Path,
) -> tuple[str, AsyncEngine, async_sessionmaker[AsyncSession]]:
    """A new SQLite database with alice and one immediate email queued for her: what a `python
    -m backend worker` process is started on. Its URL, engine (to dispose) and sessionmaker."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'notifications.db'}"
    engine = create_engine(make_settings(url, tmp_path))
    await migrate.upgrade(engine)
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker.begin() as session:
        await upsert_user(session, user_id="alice", email="alice@example.com", name="Alice")
    note_id = await add_notification(sessionmaker, "alice", created_at=utcnow(), title="Hi")
    async with sessionmaker.begin() as session:
        note = await session.get(Notification, note_id)
        assert note is not None
        queued = await queue_immediate(
            session, [note], {"alice": Preferences()}, {"alice": "alice@example.com"}
        )
        assert queued == 1
    return url, engine, sessionmaker


async def add_notification(
    sessionmaker: async_sessionmaker[AsyncSession],
    user_id: str,
    *,
    created_at: datetime,
    title: str = "Hello",
    type: str = "test",
    read: bool = False,
) -> int:
    """A stored notification with a chosen creation time (digests need a controllable clock)."""
    async with sessionmaker.begin() as session:
        user = await session.get(User, user_id)
        assert user is not None, "create the user first"
        user.last_seq += 1
        row = Notification(
            user_id=user_id, seq=user.last_seq, type=type, title=title, body="", data={},
            in_app=True, read=read, read_at=created_at if read else None,
            created_at=created_at, updated_at=created_at,
        )  # fmt: skip
        session.add(row)
        await session.flush()
        return row.id


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox()
    box.start()
    try:
        yield box
    finally:
        box.stop()


async def start_server(database_url: str, tmp_path: Path, **overrides: object) -> RunningServer:
    options: dict[str, object] = {
        "email_worker_enabled": False, "app_url": APP_URL, "email_backoff_seconds": 60.0,
    }  # fmt: skip
    settings = make_settings(database_url, tmp_path, **{**options, **overrides})
    server = RunningServer(settings)
    await server.start()
    return server


@pytest.fixture
async def mail_server(
    database_url: str, tmp_path: Path, inbox: Inbox
) -> AsyncIterator[RunningServer]:
    server = await start_server(database_url, tmp_path, smtp_host="127.0.0.1", smtp_port=inbox.port)
    try:
        yield server
    finally:
        await server.close()


def sessionmaker_of(server: RunningServer) -> async_sessionmaker[AsyncSession]:
    return server.app[keys.SESSIONMAKER]


def worker_of(server: RunningServer) -> EmailWorker:
    return EmailWorker(sessionmaker=sessionmaker_of(server), settings=server.settings)


async def register(server: RunningServer, user_id: str, email: str, name: str = "") -> None:
    body = {"email": email, "name": name or user_id.title()}
    status, answer = await server.request(
        "PUT", f"/api/v1/admin/users/{user_id}", sub="ops", scopes=(SCOPE_ADMIN,), json=body
    )
    assert status == 200, answer
    assert answer == {"id": user_id, **body}
