"""Digests: one email per user per period, of what is still unread from that period."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db import dialect_insert
from ..email.compose import DIGEST_IDS, digest_subject
from ..email.policy import (
    DIGEST_PERIODS,
    Window,
    digest_key,
    email_frequency,
    global_frequency,
    is_type_override,
    last_window,
    user_zone,
)
from ..email.queue import QUEUED, SKIPPED
from ..models import EmailLog, Notification, NotificationPreference, User
from ..schemas import Preferences
from .preferences import to_preferences

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DigestPlan:
    """Who would get which digest; `queued` once its email_logs row exists."""

    user_id: str
    recipient: str | None
    window: Window
    key: str
    total: int
    ids: list[int]
    titles: list[str]
    unsubscribe: dict[str, object] = field(default_factory=dict)
    queued: bool = False


def _type_filter(prefs: Preferences, period: str) -> tuple[object, dict[str, object]] | None:
    """The SQL condition on Notification.type for this period, and the unsubscribe scope."""
    overrides = {name for name in prefs.type_settings if is_type_override(prefs, name)}
    mine = sorted(name for name in overrides if email_frequency(prefs, name) == period)
    if global_frequency(prefs) == period:
        others = sorted(overrides - set(mine))
        condition = Notification.type.not_in(others) if others else Notification.type.is_not(None)
        return condition, {"all": True, "types": mine}
    if not mine:
        return None
    return Notification.type.in_(mine), {"all": False, "types": mine}


async def _candidates(session: AsyncSession, period: str) -> list[NotificationPreference]:
    """Users whose global frequency, or one of whose per-type settings, is this period."""
    pattern = f'%"{period}"%'
    return list(
        await session.scalars(
            select(NotificationPreference)
            .where(
                or_(
                    NotificationPreference.digest_frequency == period,
                    cast(NotificationPreference.type_settings, String).like(pattern),
                )
            )
            .order_by(NotificationPreference.user_id)
        )
    )


async def plan_digests(session: AsyncSession, *, period: str, now: datetime) -> list[DigestPlan]:
    """What each user's digest for the last complete period would hold (nothing unread: none)."""
    if period not in DIGEST_PERIODS:
        raise ValueError(f"period must be one of {DIGEST_PERIODS}")
    plans: list[DigestPlan] = []
    for row in await _candidates(session, period):
        prefs = to_preferences(row)
        selected = _type_filter(prefs, period)
        if selected is None:
            continue
        condition, unsubscribe = selected
        window = last_window(
            period, now=now, zone=user_zone(prefs.timezone), digest_hour=prefs.digest_hour
        )
        key = digest_key(row.user_id, window)
        if await session.scalar(select(EmailLog.id).where(EmailLog.digest_key == key)):
            continue  # already queued (or sent) for this period
        where = (
            (Notification.user_id == row.user_id)
            & Notification.read.is_(False)
            & Notification.deleted_at.is_(None)
            & (Notification.created_at >= window.start)
            & (Notification.created_at < window.end)
            & condition
        )
        total = await session.scalar(select(func.count()).where(where))
        if not total:
            continue
        found = (
            await session.execute(
                select(Notification.id, Notification.title)
                .where(where)
                .order_by(Notification.created_at.desc(), Notification.id.desc())
                .limit(DIGEST_IDS)
            )
        ).all()
        recipient = await session.scalar(select(User.email).where(User.id == row.user_id))
        plans.append(
            DigestPlan(
                user_id=row.user_id,
                recipient=recipient,
                window=window,
                key=key,
                total=int(total),
                ids=[i for i, _ in found],
                titles=[t for _, t in found],
                unsubscribe=unsubscribe,
            )
        )
    return plans


async def queue_digests(
    sessionmaker: async_sessionmaker[AsyncSession], *, period: str, now: datetime
) -> list[DigestPlan]:
    """Insert one row per plan; the unique digest_key makes a second run (anywhere) a no-op."""
    async with sessionmaker.begin() as session:
        plans = await plan_digests(session, period=period, now=now)
        for plan in plans:
            values = {
                "user_id": plan.user_id,
                "kind": "digest",
                "recipient": plan.recipient,
                "subject": digest_subject(period, plan.total),
                "status": QUEUED if plan.recipient else SKIPPED,
                "failed_reason": None if plan.recipient else "no email address",
                "attempts": 0,
                "next_attempt_at": now,
                "digest_key": plan.key,
                "payload": {
                    "period": period,
                    "start": plan.window.start.isoformat(),
                    "end": plan.window.end.isoformat(),
                    "ids": plan.ids,
                    "total": plan.total,
                    "unsubscribe": plan.unsubscribe,
                },
                "created_at": now,
                "updated_at": now,
            }
            statement = (
                dialect_insert(session)(EmailLog)
                .values(values)
                .on_conflict_do_nothing(index_elements=["digest_key"])
                .returning(EmailLog.id)
            )
            plan.queued = await session.scalar(statement) is not None
            if plan.queued and not plan.recipient:
                log.info("%s digest for user %s skipped: no email address", period, plan.user_id)
    return [plan for plan in plans if plan.queued]
