"""A real SMTP server (aiosmtpd on loopback) and small factories for the email tests."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import EmailLog, Notification, User

from .servers import free_port


class Inbox:
    """Collects what an aiosmtpd server accepts; `refuse` makes it answer RCPT with that line."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.messages: list[tuple[list[str], EmailMessage]] = []
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
