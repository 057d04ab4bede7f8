"""The queue is the email_logs table: claim with a lease, then settle under that claim only."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..models import EmailLog

QUEUED, SENDING, SENT, FAILED, SKIPPED = "queued", "sending", "sent", "failed", "skipped"
STATUSES = (QUEUED, SENDING, SENT, FAILED, SKIPPED)


def _due(now: datetime) -> ColumnElement[bool]:
    """Queued and due, or claimed by a worker whose lease ran out (it crashed or hung)."""
    return or_(
        (EmailLog.status == QUEUED) & (EmailLog.next_attempt_at <= now),
        (EmailLog.status == SENDING) & (EmailLog.locked_until < now),
    )


async def claim(
    session: AsyncSession, *, now: datetime, lease_seconds: float, limit: int
) -> Sequence[EmailLog]:
    """Take up to `limit` due rows: status sending, a lease, attempts + 1 (the claim's fence).

    Two statements, not `IN (subquery)`: PostgreSQL may run such a subquery once per row and
    ignore its LIMIT. There the SELECT locks with FOR UPDATE SKIP LOCKED, so concurrent workers
    take disjoint rows; SQLite has one writer, and the UPDATE checks the conditions again.
    """
    candidates = (
        select(EmailLog.id).where(_due(now)).order_by(EmailLog.next_attempt_at).limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    ids = list(await session.scalars(candidates))
    if not ids:
        return []
    result = await session.scalars(
        update(EmailLog)
        .where(EmailLog.id.in_(ids), _due(now))
        .values(
            status=SENDING,
            attempts=EmailLog.attempts + 1,
            locked_until=now + timedelta(seconds=lease_seconds),
            updated_at=now,
        )
        .returning(EmailLog),
        execution_options={"synchronize_session": False},
    )
    return sorted(result.all(), key=lambda row: row.id)


async def settle(
    session: AsyncSession, row: EmailLog, *, now: datetime, status: str, **values: object
) -> bool:
    """Record the outcome, only if this claim still holds the row (same status and attempts).

    A worker that outlived its lease and lost the row to another finds nothing to update.
    """
    result = await session.execute(
        update(EmailLog)
        .where(
            EmailLog.id == row.id,
            EmailLog.status == SENDING,
            EmailLog.attempts == row.attempts,
        )
        .values(status=status, locked_until=None, updated_at=now, **values)
        .returning(EmailLog.id),
        execution_options={"synchronize_session": False},
    )
    return result.scalar_one_or_none() is not None
