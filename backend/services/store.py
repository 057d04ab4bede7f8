"""Writing notifications: one transaction for one request or a batch of them.

Per-user `seq` comes from one upsert on `users`: it creates unknown users and adds the number
of new notifications to `last_seq` in the same statement, taking each user's row lock (in id
order, so two batches never deadlock) until the commit. So a user's seq values follow commit
order, which durable recovery relies on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import dialect_insert
from ..models import Notification, TopicSubscription, User, utcnow
from ..schemas import NotificationCreate, Preferences
from . import preferences as preference_service

AfterInsert = Callable[
    [AsyncSession, Sequence[Notification], dict[str, Preferences]], Awaitable[Any]
]


async def recipients(session: AsyncSession, request: NotificationCreate) -> list[str]:
    """The request's users, each once, or the topic's subscribers."""
    if request.topic is None:
        return list(dict.fromkeys(request.user_ids or ()))
    rows = await session.scalars(
        select(TopicSubscription.user_id)
        .where(TopicSubscription.topic == request.topic)
        .order_by(TopicSubscription.user_id)
    )
    return list(rows)


async def allocate_seqs(session: AsyncSession, wanted: Counter[str]) -> dict[str, int]:
    """Upsert the users and reserve `wanted[user]` seqs each; returns each user's first seq."""
    now = utcnow()
    table = User.__table__
    insert = dialect_insert(session)(table)
    statement = insert.on_conflict_do_update(
        index_elements=["id"],
        set_={"last_seq": table.c.last_seq + insert.excluded.last_seq, "updated_at": now},
    ).returning(table.c.id, table.c.last_seq, sort_by_parameter_order=True)
    params = [
        {"id": uid, "last_seq": count, "created_at": now, "updated_at": now}
        for uid, count in sorted(wanted.items())
    ]
    connection = await session.connection()
    result = await connection.execute(statement, params)
    return {uid: last_seq - wanted[uid] + 1 for uid, last_seq in result.all()}


async def store(
    session: AsyncSession, requests: Sequence[NotificationCreate], after_insert: AfterInsert
) -> list[list[Notification]]:
    """Insert one notification per recipient of each request; rows come back per request."""
    audiences = [await recipients(session, request) for request in requests]
    wanted = Counter(uid for audience in audiences for uid in audience)
    if not wanted:
        return [[] for _ in requests]
    next_seq = await allocate_seqs(session, wanted)
    prefs = await preference_service.load_many(session, wanted)
    now = utcnow()
    values: list[dict[str, Any]] = []
    for request, audience in zip(requests, audiences, strict=True):
        for uid in audience:
            values.append(
                {
                    "user_id": uid,
                    "seq": next_seq[uid],
                    "type": request.type,
                    "title": request.title,
                    "body": request.body,
                    "icon": request.icon,
                    "action_url": request.action_url,
                    "data": request.data,
                    "in_app": preference_service.in_app_enabled(prefs[uid], request.type),
                    "read": False,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            next_seq[uid] += 1
    inserted = await session.scalars(
        dialect_insert(session)(Notification).returning(Notification, sort_by_parameter_order=True),
        values,
    )
    rows = list(inserted.all())
    await after_insert(session, rows, prefs)
    grouped: list[list[Notification]] = []
    start = 0
    for audience in audiences:
        grouped.append(rows[start : start + len(audience)])
        start += len(audience)
    return grouped


async def unread_counts(session: AsyncSession, user_ids: Sequence[str]) -> dict[str, int]:
    """Exact unread counts of many users in one query."""
    if not user_ids:
        return {}
    result = await session.execute(
        select(Notification.user_id, func.count())
        .where(
            Notification.user_id.in_(user_ids),
            Notification.read.is_(False),
            Notification.deleted_at.is_(None),
            Notification.in_app.is_(True),
        )
        .group_by(Notification.user_id)
    )
    counts = dict.fromkeys(user_ids, 0)
    counts.update(dict(result.all()))
    return counts
