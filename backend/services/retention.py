"""Retention: personal data past its time is deleted in short batches, never under one long lock.

One pattern for every purge (notifications, email logs, ingested events, an erase's first phase):
`purge_batches` selects at most `batch` due ids, deletes them in one short transaction, pauses,
and goes on until fewer than a batch were due. `Retention.run` applies the policy once, at a
`now` the caller gives (the background loop: the wall clock; a test: its own).

Purging a notification raises its user's `purged_seq` in the same transaction: recovery from
a `last_seq` below it answers `recovered: false` (refetch), never a silent gap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Row, Select, Table, bindparam, case, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db import is_unavailable
from ..email import queue
from ..models import EmailLog, Notification, User, utcnow

if TYPE_CHECKING:
    from .events import EventIngest

log = logging.getLogger(__name__)

BeforeDelete = Callable[[AsyncSession, Sequence[Row[Any]]], Awaitable[None]]
# An email log still queued or being sent is the queue itself, never purged.
SETTLED_EMAIL = (queue.SENT, queue.FAILED, queue.SKIPPED)


async def purge_batches(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    due: Select[Any],
    id_column: Any,
    batch: int,
    pause: float = 0.0,
    before_delete: BeforeDelete | None = None,
) -> int:
    """Delete the rows `due` selects (its first column is `id_column`), `batch` per transaction,
    sleeping `pause` seconds between two; the number deleted. `before_delete` runs in each
    batch's transaction with the rows selected."""
    total = 0
    statement = due.order_by(id_column).limit(batch)
    while True:
        async with sessionmaker.begin() as session:
            rows = list(await session.execute(statement))
            if rows:
                if before_delete is not None:
                    await before_delete(session, rows)
                ids = [row[0] for row in rows]
                await session.execute(
                    delete(id_column.table).where(id_column.in_(ids)),
                    execution_options={"synchronize_session": False},
                )
        total += len(rows)
        if len(rows) < batch:
            return total
        if pause > 0:
            await asyncio.sleep(pause)


_USERS = cast(Table, User.__table__)
_RAISE_WATERMARK = (
    update(_USERS)
    .where(_USERS.c.id == bindparam("uid"))
    .values(
        purged_seq=case(
            (_USERS.c.purged_seq < bindparam("top"), bindparam("top")),
            else_=_USERS.c.purged_seq,
        )
    )
)


async def raise_watermarks(session: AsyncSession, rows: Sequence[Row[Any]]) -> None:
    """Rows of (id, user_id, seq) about to be purged: each user's purged_seq reaches their
    highest seq. Users in id order, as publishes lock them, so the two never deadlock."""
    highest: dict[str, int] = {}
    for _id, user_id, seq in rows:
        highest[user_id] = max(highest.get(user_id, 0), seq)
    params = [{"uid": user_id, "top": seq} for user_id, seq in sorted(highest.items())]
    await session.execute(_RAISE_WATERMARK, params)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Days each kind of record is kept (0: forever) and how the purge paces itself."""

    read_days: int
    deleted_days: int
    email_log_days: int
    events_days: int
    batch: int
    pause: float


class Retention:
    """Purges what the policy says is due; counts what it purged (read by the log line)."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        events: EventIngest,
        policy: RetentionPolicy,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._events = events
        self.policy = policy

    async def run(self, *, now: datetime) -> dict[str, int]:
        """One pass over every kind of record; how many of each were purged."""
        policy = self.policy
        purged: dict[str, int] = {}
        if policy.read_days > 0:
            purged["read notifications"] = await self._notifications(
                Notification.read_at < now - timedelta(days=policy.read_days)
            )
        if policy.deleted_days > 0:
            purged["deleted notifications"] = await self._notifications(
                Notification.deleted_at < now - timedelta(days=policy.deleted_days)
            )
        if policy.email_log_days > 0:
            cutoff = now - timedelta(days=policy.email_log_days)
            purged["email logs"] = await purge_batches(
                self._sessionmaker,
                due=select(EmailLog.id).where(
                    EmailLog.created_at < cutoff, EmailLog.status.in_(SETTLED_EMAIL)
                ),
                id_column=EmailLog.id,
                batch=policy.batch,
                pause=policy.pause,
            )
        if policy.events_days > 0:
            purged["events"] = await self._events.purge(
                older_than=now - timedelta(days=policy.events_days),
                batch=policy.batch,
                pause=policy.pause,
            )
        return purged

    async def _notifications(self, condition: Any) -> int:
        return await purge_batches(
            self._sessionmaker,
            due=select(Notification.id, Notification.user_id, Notification.seq).where(condition),
            id_column=Notification.id,
            batch=self.policy.batch,
            pause=self.policy.pause,
            before_delete=raise_watermarks,
        )


async def retention_loop(retention: Retention, *, interval: float) -> None:
    """Every `interval` seconds, from the start: one pass, one log line with the counts."""
    while True:
        try:
            purged = await retention.run(now=utcnow())
            if any(purged.values()):
                counts = ", ".join(f"{n} {kind}" for kind, n in purged.items() if n)
                log.info("retention purged %s", counts)
        except Exception as exc:
            if not is_unavailable(exc):
                log.exception("the retention purge failed; trying again next interval")
            else:  # an outage is one line, not a traceback
                log.warning("the retention purge: the database is unavailable; next interval")
        await asyncio.sleep(interval)
