"""Turn a claimed email_logs row into a message, or into the reason it is no longer wanted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..config import Settings
from ..models import EmailLog, Notification, User
from . import tokens
from .render import Item, Letter, absolute_url, build_message, sanitize_header

DIGEST_ITEMS = 10  # shown in a digest; the rest are "and N more"
DIGEST_IDS = 200  # remembered per digest row; beyond that only the count


@dataclass(frozen=True, slots=True)
class Composed:
    message: EmailMessage
    subject: str


def immediate_subject(title: str) -> str:
    return sanitize_header(title) or "New notification"


def digest_subject(period: str, count: int) -> str:
    noun = "notification" if count == 1 else "notifications"
    return f"Your {period} digest: {count} unread {noun}"


def _item(settings: Settings, row: Notification) -> Item:
    return Item(
        title=sanitize_header(row.title, max_length=255),
        body=row.body,
        url=absolute_url(settings.app_url, row.action_url),
        created_at=row.created_at,
        type=row.type,
    )


def _unsubscribe_url(
    settings: Settings, key: bytes | None, log: EmailLog, payload: dict[str, Any], now: datetime
) -> str | None:
    if key is None:
        return None
    scope = payload.get("unsubscribe") or {"all": True, "types": []}
    return tokens.link(
        settings,
        key,
        tokens.UnsubscribeScope(
            user_id=log.user_id,
            all_email=bool(scope.get("all")),
            types=tuple(scope.get("types") or ()),
        ),
        now=now,
    )


async def compose(
    session: AsyncSession,
    log: EmailLog,
    *,
    settings: Settings,
    key: bytes | None,
    now: datetime,
) -> Composed | str:
    """The message to send, or a `skipped` reason (read meanwhile, deleted, nothing left)."""
    if not log.recipient:
        return "no email address"
    payload = log.payload or {}
    user = await session.get(User, log.user_id)
    name = user.name if user is not None else None
    unsubscribe = _unsubscribe_url(settings, key, log, payload, now)
    if log.kind == "digest":
        ids = [int(i) for i in payload.get("ids", [])]
        rows = list(
            await session.scalars(
                select(Notification)
                .where(
                    Notification.id.in_(ids),
                    Notification.user_id == log.user_id,
                    Notification.read.is_(False),
                    Notification.deleted_at.is_(None),
                )
                .order_by(Notification.created_at.desc(), Notification.id.desc())
            )
        )
        if not rows:
            return "everything in this digest was read before it was sent"
        unknown = max(int(payload.get("total", len(ids))) - len(ids), 0)
        count = len(rows) + unknown
        period = str(payload.get("period", "daily"))
        subject = digest_subject(period, count)
        letter = Letter(
            subject=subject,
            heading=f"{count} unread {'notification' if count == 1 else 'notifications'}",
            items=[_item(settings, row) for row in rows[:DIGEST_ITEMS]],
            more=count - min(len(rows), DIGEST_ITEMS),
            period=period,
            app_url=settings.app_url,
            unsubscribe_url=unsubscribe,
            recipient_name=name,
        )
        template = "digest"
    else:
        row = None
        if log.notification_id is not None:
            row = await session.get(Notification, log.notification_id)
        if row is None or row.deleted_at is not None:
            return "the notification was deleted before the email was sent"
        if payload.get("if_unread") and row.read:
            return "read in the app before the email was due"
        if payload.get("if_unread") and payload.get("unless") == "delivered" and row.delivered_at:
            return "delivered to a device before the email was due"
        # A template's email parts, rendered at publish; each one it lacks comes from the layout.
        content = payload.get("content") or {}
        subject = immediate_subject(content.get("subject") or row.title)
        html = content.get("html")
        letter = Letter(
            subject=subject,
            heading=immediate_subject(row.title),
            items=[_item(settings, row)],
            app_url=settings.app_url,
            unsubscribe_url=unsubscribe,
            recipient_name=name,
            text=content.get("text"),
            html=None if html is None else Markup(html),  # escaped when it was rendered
        )
        template = "templated" if "text" in content or "html" in content else "immediate"
    message = build_message(
        letter=letter,
        template=template,
        sender=settings.email_from,
        recipient=log.recipient,
        message_id=f"email-log-{log.id}",
        date=now,
    )
    return Composed(message=message, subject=subject)
