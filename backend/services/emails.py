"""Email decisions outside the worker: queue on create, the admin log, retry, unsubscribe."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..email import queue, tokens
from ..email.compose import immediate_subject
from ..email.policy import email_frequency, held_unless, is_type_override, unread_delay_minutes
from ..errors import Conflict, NotFound
from ..models import EmailLog, User, utcnow
from ..schemas import Preferences, PreferencesUpdate, TypeSetting, isoformat
from . import preferences as preference_service
from .store import StoredNotification
from .users import upsert_user

log = logging.getLogger(__name__)


async def queue_immediate(
    session: AsyncSession,
    rows: Sequence[StoredNotification],
    prefs: dict[str, Preferences],
    emails: dict[str, str | None],
) -> int:
    """Queue an email_logs row per notification whose type is emailed immediately.

    Runs inside the creating transaction: the notification and its email commit together.
    `emails` are the recipients' addresses on record, read with their row locks.
    """
    values = immediate_values(rows, prefs, emails)
    if values:
        await session.execute(insert(EmailLog), values)
    return len(values)


def immediate_values(
    rows: Sequence[StoredNotification],
    prefs: dict[str, Preferences],
    emails: dict[str, str | None],
) -> list[dict[str, Any]]:
    """The email_logs rows `queue_immediate` inserts (also inserted by the store's direct
    PostgreSQL path, which has no session)."""
    wanted = [row for row in rows if email_frequency(prefs[row.user_id], row.type) == "immediate"]
    if not wanted:
        return []
    without = sorted({row.user_id for row in wanted if not emails.get(row.user_id)})
    if without:
        shown = ", ".join(without[:5]) + (" ..." if len(without) > 5 else "")
        log.info("email skipped for %d user(s) without an email address: %s", len(without), shown)
    values: list[dict[str, Any]] = []
    for row in wanted:
        recipient = emails.get(row.user_id)
        if not recipient:
            continue
        user_prefs = prefs[row.user_id]
        delay = unread_delay_minutes(user_prefs, row.type)
        per_type = is_type_override(user_prefs, row.type)
        # A template's email parts, rendered at publish (a row stored without one has none).
        rendered = getattr(row, "email", None)
        values.append(
            {
                "user_id": row.user_id,
                "notification_id": row.id,
                "kind": "immediate",
                "recipient": recipient,
                "subject": immediate_subject(
                    rendered.subject if rendered and rendered.subject else row.title
                ),
                "status": queue.QUEUED,
                "attempts": 0,
                "next_attempt_at": row.created_at + timedelta(minutes=delay or 0),
                "payload": {
                    "if_unread": delay is not None,
                    "unless": held_unless(user_prefs, row.type),
                    "unsubscribe": {"all": not per_type, "types": [row.type] if per_type else []},
                    # what the worker sends instead of the layouts' parts; never re-rendered
                    **({"content": rendered.as_payload()} if rendered else {}),
                },
                "created_at": row.created_at,
                "updated_at": row.created_at,
            }
        )
    return values


def log_json(row: EmailLog) -> dict[str, Any]:
    """The admin's view of one email."""
    payload = row.payload or {}
    return {
        "id": row.id,
        "user_id": row.user_id,
        "notification_id": row.notification_id,
        "kind": row.kind,
        "period": payload.get("period"),
        "recipient": row.recipient,
        "subject": row.subject,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": isoformat(row.next_attempt_at) if row.status == queue.QUEUED else None,
        "sent_at": isoformat(row.sent_at),
        "failed_reason": row.failed_reason,
        "created_at": isoformat(row.created_at),
        "updated_at": isoformat(row.updated_at),
    }


async def count_by_status(*, sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    """Email log rows per status, every status present (one grouped query, on the status index)."""
    statement = select(EmailLog.status, func.count()).group_by(EmailLog.status)
    async with sessionmaker() as session:
        rows = (await session.execute(statement)).all()
    counts = dict.fromkeys(queue.STATUSES, 0)
    counts.update({str(status): int(count) for status, count in rows})
    return counts


async def list_logs(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    status: str | None = None,
    user_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: int | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; `cursor` is the last id of the previous page."""
    statement = select(EmailLog)
    if status is not None:
        statement = statement.where(EmailLog.status == status)
    if user_id is not None:
        statement = statement.where(EmailLog.user_id == user_id)
    if since is not None:
        statement = statement.where(EmailLog.created_at >= since)
    if until is not None:
        statement = statement.where(EmailLog.created_at < until)
    if cursor is not None:
        statement = statement.where(EmailLog.id < cursor)
    async with sessionmaker() as session:
        rows = list(await session.scalars(statement.order_by(EmailLog.id.desc()).limit(limit + 1)))
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return [log_json(row) for row in rows[:limit]], next_cursor


async def retry(
    *, sessionmaker: async_sessionmaker[AsyncSession], log_id: int, now: datetime | None = None
) -> dict[str, Any]:
    """A failed email back in the queue with a fresh attempt budget."""
    at = now or utcnow()
    async with sessionmaker.begin() as session:
        row = await session.scalar(
            update(EmailLog)
            .where(EmailLog.id == log_id, EmailLog.status == queue.FAILED)
            .values(
                status=queue.QUEUED, attempts=0, next_attempt_at=at, locked_until=None,
                failed_reason=None, updated_at=at,
            )
            .returning(EmailLog),
            execution_options={"synchronize_session": False},
        )  # fmt: skip
        if row is None:
            status = await session.scalar(select(EmailLog.status).where(EmailLog.id == log_id))
            if status is None:
                raise NotFound(f"email log {log_id} not found")
            raise Conflict(f"only a failed email can be retried; this one is {status}")
        return log_json(row)


async def register_user(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    user_id: str,
    email: str | None,
    name: str | None,
) -> dict[str, Any]:
    """A publisher tells us a recipient's address (and name) before they ever connect."""
    async with sessionmaker.begin() as session:
        await upsert_user(session, user_id=user_id, email=email, name=name)
        user = await session.get(User, user_id)
        assert user is not None
        return {"id": user.id, "email": user.email, "name": user.name}


async def unsubscribe(
    *, sessionmaker: async_sessionmaker[AsyncSession], scope: tokens.UnsubscribeScope
) -> Preferences:
    """What a one-click link says: all email off, and/or these types' email off."""
    current = await preference_service.get_preferences(
        sessionmaker=sessionmaker, user_id=scope.user_id
    )
    type_settings = {
        name: (current.type_settings.get(name) or TypeSetting()).model_copy(
            update={"email": "never"}
        )
        for name in scope.types
    }
    update_ = PreferencesUpdate(
        email_notifications=False if scope.all_email else None,
        type_settings=type_settings or None,
    )
    prefs = await preference_service.update_preferences(
        sessionmaker=sessionmaker, user_id=scope.user_id, update=update_
    )
    log.info(
        "user %s unsubscribed by link (all=%s, types=%s)",
        scope.user_id,
        scope.all_email,
        ",".join(scope.types) or "-",
    )
    return prefs
