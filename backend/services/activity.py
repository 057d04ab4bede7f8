"""The activity timeline: what happened to a notification after it was created, and the search.

`created` is not a row: the notification itself holds when and by whom (publisher,
publisher_kind), so publishing writes nothing more. Read, delivered, deleted and emailed steps
are inserted in the transaction that makes the change (one multi-row insert each). `pushed`
steps come from the delivery path, which must not wait on the database: they go to a bounded
queue that one task drains in multi-row inserts (`PushLog`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..codec import OrjsonModule
from ..db import asyncpg_engine, is_unavailable, single
from ..errors import NotFound
from ..models import Activity, Notification, utcnow
from ..schemas import isoformat

log = logging.getLogger(__name__)

CREATED = "created"
PUSHED = "pushed"
DELIVERED = "delivered"
READ = "read"
EMAILED = "emailed"
EMAIL_FAILED = "email_failed"
EMAIL_SKIPPED = "email_skipped"
DELETED = "deleted"
KINDS = (CREATED, PUSHED, DELIVERED, READ, EMAILED, EMAIL_FAILED, EMAIL_SKIPPED, DELETED)


def step(
    notification_id: int,
    user_id: str,
    type_: str,
    kind: str,
    at: datetime,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "notification_id": notification_id,
        "user_id": user_id,
        "type": type_,
        "kind": kind,
        "at": at,
        "detail": detail,
    }


# PostgreSQL: one fixed statement with one array per column, whatever the row count. An
# executemany of 500 `pushed` steps was 500 executions on both sides: about 12 µs of our CPU and
# 25 µs of PostgreSQL's per delivery in a fan-out (bench/README).
PG_RECORD = text(
    """
    INSERT INTO activity (notification_id, user_id, type, kind, at, detail)
    SELECT s.notification_id, s.user_id, s.type, s.kind, s.at, CAST(s.detail AS JSON)
    FROM unnest(CAST(:notification_id AS BIGINT[]), CAST(:user_id AS TEXT[]),
                CAST(:type AS TEXT[]), CAST(:kind AS TEXT[]), CAST(:at AS TIMESTAMPTZ[]),
                CAST(:detail AS TEXT[]))
         AS s(notification_id, user_id, type, kind, at, detail)
    """
)
COLUMNS = ("notification_id", "user_id", "type", "kind", "at")
# PG_RECORD for asyncpg directly (PushLog on PostgreSQL): one statement, which commits by itself.
DIRECT_RECORD = """
    INSERT INTO activity (notification_id, user_id, type, kind, at, detail)
    SELECT s.notification_id, s.user_id, s.type, s.kind, s.at, CAST(s.detail AS JSON)
    FROM unnest($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TIMESTAMPTZ[], $6::TEXT[])
         AS s(notification_id, user_id, type, kind, at, detail)
"""


async def record(session: AsyncSession, steps: list[dict[str, Any]]) -> None:
    """Insert steps inside the caller's transaction, in one statement (nothing when empty)."""
    if not steps:
        return
    connection = await session.connection()
    if connection.dialect.name != "postgresql":
        await connection.execute(insert(Activity), steps)
        return
    params: dict[str, Any] = {name: [one[name] for one in steps] for name in COLUMNS}
    params["detail"] = _details(steps)
    await connection.execute(PG_RECORD, params)


def _details(steps: list[dict[str, Any]]) -> list[str | None]:
    return [None if one["detail"] is None else OrjsonModule.dumps(one["detail"]) for one in steps]


async def record_direct(connection: Any, steps: list[dict[str, Any]]) -> None:
    """`record` on an asyncpg connection, outside a transaction (db.single): one statement."""
    await connection.execute(
        DIRECT_RECORD, *([one[name] for one in steps] for name in COLUMNS), _details(steps)
    )


class PushLog:
    """`pushed` steps from the delivery path: appended without an await, written in batches.

    At most `max_queued` wait; past that a step is dropped and counted (`dropped`, in /metrics),
    so a database outage or a reconnect storm never grows memory or slows delivery.
    """

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        max_queued: int,
        batch: int = 500,
        linger: float = 0.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        # PostgreSQL through asyncpg: each batch is one statement on its own (db.single), not
        # a session's ping, BEGIN, statement and COMMIT (≈ 0.9 ms of CPU a batch).
        self._direct = asyncpg_engine(sessionmaker)
        self._linger = linger
        self._queue: deque[dict[str, Any]] = deque()
        self._max = max_queued
        self._batch = batch
        self._ready = asyncio.Event()
        self._writing = asyncio.Lock()  # one writer; a flush waits for the batch in flight
        self.dropped = 0
        self.written = 0
        self.batches = 0  # transactions that wrote steps

    def pushed(self, notification: dict[str, Any], user_id: str, sessions: int, via: str) -> None:
        if len(self._queue) >= self._max:
            self.dropped += 1
            return
        detail = {"sessions": sessions, "via": via}
        self._queue.append(
            step(notification["id"], user_id, notification["type"], PUSHED, utcnow(), detail)
        )
        self._ready.set()

    def __len__(self) -> int:
        return len(self._queue)

    async def flush(self) -> int:
        """Write what is queued now (after any batch in flight); returns how many were written."""
        async with self._writing:
            return await self._write()

    async def _write(self) -> int:
        written = 0
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
            try:
                if self._direct is not None:
                    await single(self._direct, partial(record_direct, steps=batch))
                else:
                    async with self._sessionmaker.begin() as session:
                        await record(session, batch)
            except Exception as exc:
                # Steps of notifications deleted meanwhile (the foreign key) or an outage: the
                # batch is lost and counted, never retried forever.
                self.dropped += len(batch)
                if is_unavailable(exc):
                    log.warning("activity: %d pushed steps dropped: database away", len(batch))
                else:
                    log.exception("activity: %d pushed steps could not be written", len(batch))
                continue
            written += len(batch)
            self.batches += 1
        self.written += written
        return written

    async def run(self) -> None:
        """Drain until cancelled. The first step queued waits `linger` seconds (unless a batch
        is full) for others to share its transaction: at 1,000 pushes/s, one insert per ~100
        steps instead of one per push or two; steps that arrive during a write make the next
        batch."""
        while True:
            await self._ready.wait()
            if self._linger > 0 and len(self._queue) < self._batch:
                await asyncio.sleep(self._linger)
            self._ready.clear()
            await self.flush()


def _step_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "notification_id": row.notification_id,
        "user_id": row.user_id,
        "type": row.type,
        "kind": row.kind,
        "at": isoformat(row.at),
        "detail": row.detail,
    }


async def timeline(
    *, sessionmaker: async_sessionmaker[AsyncSession], notification_id: int, limit: int
) -> dict[str, Any]:
    """One notification (deleted ones too) and its steps in order, `created` first."""
    async with sessionmaker() as session:
        row = await session.get(Notification, notification_id)
        if row is None:
            raise NotFound(f"notification {notification_id} not found")
        steps = list(
            await session.scalars(
                select(Activity)
                .where(Activity.notification_id == notification_id)
                .order_by(Activity.at, Activity.id)
                .limit(limit)
            )
        )
    created = {
        "id": None,
        "notification_id": row.id,
        "user_id": row.user_id,
        "type": row.type,
        "kind": CREATED,
        "at": isoformat(row.created_at),
        "detail": {"publisher": row.publisher, "publisher_kind": row.publisher_kind},
    }
    notification = {
        "id": row.id,
        "user_id": row.user_id,
        "seq": row.seq,
        "type": row.type,
        "title": row.title,
        "publisher": row.publisher,
        "publisher_kind": row.publisher_kind,
        "in_app": row.in_app,
        "created_at": isoformat(row.created_at),
        "delivered_at": isoformat(row.delivered_at),
        "read_at": isoformat(row.read_at),
        "deleted_at": isoformat(row.deleted_at),
    }
    return {"notification": notification, "activity": [created, *map(_step_json, steps)]}


@dataclass(frozen=True, slots=True)
class Search:
    user_id: str | None = None
    type: str | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def search(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    where: Search,
    limit: int,
    cursor: int | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Recorded steps, newest first (by id: keyset pages); `cursor` is the previous page's
    last id."""
    statement = select(Activity)
    if where.user_id is not None:
        statement = statement.where(Activity.user_id == where.user_id)
    if where.type is not None:
        statement = statement.where(Activity.type == where.type)
    if where.kind is not None:
        statement = statement.where(Activity.kind == where.kind)
    if where.since is not None:
        statement = statement.where(Activity.at >= where.since)
    if where.until is not None:
        statement = statement.where(Activity.at < where.until)
    if cursor is not None:
        statement = statement.where(Activity.id < cursor)
    async with sessionmaker() as session:
        rows = list(await session.scalars(statement.order_by(Activity.id.desc()).limit(limit + 1)))
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return [_step_json(row) for row in rows[:limit]], next_cursor
