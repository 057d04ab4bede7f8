"""NotificationService: persist first, broadcast second, every query scoped to its user."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db import dialect_insert
from ..errors import Conflict, NotFound
from ..models import IdempotencyKey, Notification, TopicSubscription, User, utcnow
from ..realtime.notifier import Notifier
from ..schemas import NotificationCreate, Preferences
from . import emails
from . import preferences as preference_service
from .users import ensure_users


def isoformat(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def notification_json(row: Notification) -> dict[str, Any]:
    """The wire form of a notification, the same over REST and Socket.IO."""
    return {
        "id": row.id,
        "seq": row.seq,
        "type": row.type,
        "title": row.title,
        "body": row.body,
        "icon": row.icon,
        "action_url": row.action_url,
        "data": row.data,
        "created_at": isoformat(row.created_at),
        "read_at": isoformat(row.read_at),
    }


@dataclass(frozen=True, slots=True)
class Created:
    notifications: list[dict[str, Any]]
    replayed: bool = False


class _KeyTaken(Exception):
    """A concurrent request with the same Idempotency-Key committed first."""


def visible(user_id: str) -> Any:
    """What a user may see of their own notifications: not deleted, not in-app-muted."""
    return (
        (Notification.user_id == user_id)
        & Notification.deleted_at.is_(None)
        & Notification.in_app.is_(True)
    )


def unread(user_id: str) -> Any:
    return visible(user_id) & Notification.read.is_(False)


def request_hash(request: NotificationCreate) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class NotificationService:
    """Creates, lists and changes notifications; emits only after the commit."""

    def __init__(
        self, *, sessionmaker: async_sessionmaker[AsyncSession], notifier: Notifier
    ) -> None:
        self._sessionmaker = sessionmaker
        self._notifier = notifier
        self.created_total = 0  # read by /metrics

    async def create(
        self, *, publisher: str, request: NotificationCreate, idempotency_key: str | None = None
    ) -> Created:
        for _attempt in range(3):
            try:
                created, counts, pushed = await self._create_once(
                    publisher=publisher, request=request, idempotency_key=idempotency_key
                )
            except _KeyTaken:
                continue
            if not created.replayed:
                self.created_total += len(created.notifications)
                await self._broadcast(pushed, counts)
            return created
        raise Conflict("a request with this Idempotency-Key is still in progress; retry")

    async def _create_once(
        self, *, publisher: str, request: NotificationCreate, idempotency_key: str | None
    ) -> tuple[Created, dict[str, int], list[tuple[str, dict[str, Any]]]]:
        async with self._sessionmaker.begin() as session:
            key_row: IdempotencyKey | None = None
            if idempotency_key is not None:
                digest = request_hash(request)
                replay = await self._replay(session, publisher, idempotency_key, digest)
                if replay is not None:
                    return replay, {}, []
                key_row = await self._claim_key(session, publisher, idempotency_key, digest)

            if request.topic is not None:
                user_ids = list(
                    await session.scalars(
                        select(TopicSubscription.user_id)
                        .where(TopicSubscription.topic == request.topic)
                        .order_by(TopicSubscription.user_id)
                    )
                )
            else:
                user_ids = list(dict.fromkeys(request.user_ids or ()))
            rows = await self._insert(session, user_ids, request)
            if key_row is not None:
                key_row.notification_ids = [row.id for row in rows]
            payloads = [notification_json(row) for row in rows]
            pushed = [(row.user_id, p) for row, p in zip(rows, payloads, strict=True) if row.in_app]
            counts = await self._unread_counts(session, sorted({uid for uid, _ in pushed}))
        return Created(notifications=payloads), counts, pushed

    async def _insert(
        self, session: AsyncSession, user_ids: list[str], request: NotificationCreate
    ) -> list[Notification]:
        if not user_ids:
            return []
        await ensure_users(session, user_ids)
        seqs = await self._allocate_seqs(session, user_ids)
        prefs = await preference_service.load_many(session, user_ids)
        now = utcnow()
        values = [
            {
                "user_id": uid,
                "seq": seqs[uid],
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
            for uid in user_ids
        ]
        result = await session.scalars(
            dialect_insert(session)(Notification).returning(Notification), values
        )
        position = {uid: index for index, uid in enumerate(user_ids)}
        rows = sorted(result.all(), key=lambda row: position[row.user_id])
        await self._after_insert(session, rows, prefs)
        return rows

    async def _after_insert(
        self,
        session: AsyncSession,
        rows: Sequence[Notification],
        prefs: dict[str, Preferences],
    ) -> None:
        """Hook inside the creating transaction (emails are queued here)."""
        await emails.queue_immediate(session, rows, prefs)

    async def _allocate_seqs(self, session: AsyncSession, user_ids: list[str]) -> dict[str, int]:
        """Take each user's row lock (in id order, so batches never deadlock) and bump last_seq.

        The lock is held until commit, so a user's seq values follow commit order.
        """
        ordered = sorted(user_ids)
        if session.get_bind().dialect.name == "postgresql":
            locked = (
                select(User.id).where(User.id.in_(ordered)).order_by(User.id).with_for_update()
            ).subquery()
            statement = (
                update(User)
                .where(User.id == locked.c.id)
                .values(last_seq=User.last_seq + 1)
                .returning(User.id, User.last_seq)
            )
        else:
            statement = (
                update(User)
                .where(User.id.in_(ordered))
                .values(last_seq=User.last_seq + 1)
                .returning(User.id, User.last_seq)
            )
        result = await session.execute(statement, execution_options={"synchronize_session": False})
        return dict(result.all())

    async def _replay(
        self, session: AsyncSession, owner: str, key: str, digest: str
    ) -> Created | None:
        existing = await session.scalar(
            select(IdempotencyKey).where(IdempotencyKey.owner == owner, IdempotencyKey.key == key)
        )
        if existing is None:
            return None
        if existing.request_hash != digest:
            raise Conflict(
                "this Idempotency-Key was already used with a different request body",
                details={"idempotency_key": key},
            )
        rows = await session.scalars(
            select(Notification)
            .where(Notification.id.in_(existing.notification_ids))
            .order_by(Notification.id)
        )
        return Created(notifications=[notification_json(row) for row in rows], replayed=True)

    async def _claim_key(
        self, session: AsyncSession, owner: str, key: str, digest: str
    ) -> IdempotencyKey:
        statement = (
            dialect_insert(session)(IdempotencyKey)
            .values(
                owner=owner, key=key, request_hash=digest, notification_ids=[], created_at=utcnow()
            )
            .on_conflict_do_nothing(index_elements=["owner", "key"])
            .returning(IdempotencyKey.id)
        )
        key_id = await session.scalar(statement)
        if key_id is None:
            raise _KeyTaken
        row = await session.get(IdempotencyKey, key_id)
        assert row is not None
        return row

    async def _unread_counts(self, session: AsyncSession, user_ids: list[str]) -> dict[str, int]:
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

    async def _broadcast(
        self, pushed: list[tuple[str, dict[str, Any]]], counts: dict[str, int]
    ) -> None:
        for user_id, payload in pushed:
            await self._notifier.emit_to_user(user_id, "notification", payload)
        for user_id, count in counts.items():
            await self._notifier.emit_to_user(user_id, "unread_count", {"count": count})

    # -- reading ---------------------------------------------------------------------------

    async def list(
        self, *, user_id: str, unread_only: bool, limit: int, cursor: int | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        condition = unread(user_id) if unread_only else visible(user_id)
        if cursor is not None:
            condition = condition & (Notification.id < cursor)
        async with self._sessionmaker() as session:
            rows = list(
                await session.scalars(
                    select(Notification)
                    .where(condition)
                    .order_by(Notification.id.desc())
                    .limit(limit + 1)
                )
            )
        next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
        return [notification_json(row) for row in rows[:limit]], next_cursor

    async def unread_count(self, *, user_id: str) -> int:
        async with self._sessionmaker() as session:
            return await self._count_unread(session, user_id)

    @staticmethod
    async def _count_unread(session: AsyncSession, user_id: str) -> int:
        count = await session.scalar(select(func.count()).where(unread(user_id)))
        return int(count or 0)

    async def get(self, *, user_id: str, notification_id: int) -> dict[str, Any]:
        async with self._sessionmaker() as session:
            row = await session.scalar(
                select(Notification).where(visible(user_id), Notification.id == notification_id)
            )
        if row is None:
            raise NotFound(f"notification {notification_id} not found")
        return notification_json(row)

    async def after_seq(self, *, user_id: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        """Visible notifications stored after a seq, oldest first: the recovery query."""
        async with self._sessionmaker() as session:
            rows = await session.scalars(
                select(Notification)
                .where(visible(user_id), Notification.seq > after_seq)
                .order_by(Notification.seq)
                .limit(limit)
            )
            return [notification_json(row) for row in rows]

    async def count_after(self, *, user_id: str, after_seq: int) -> tuple[int, int]:
        """How many visible notifications follow a seq, and the user's latest seq."""
        async with self._sessionmaker() as session:
            count = await session.scalar(
                select(func.count()).where(visible(user_id), Notification.seq > after_seq)
            )
            last_seq = await session.scalar(select(User.last_seq).where(User.id == user_id))
        return int(count or 0), int(last_seq or 0)

    # -- changing --------------------------------------------------------------------------

    async def mark_read(
        self, *, user_id: str, ids: Sequence[int], require_found: bool = False
    ) -> list[int]:
        """Mark the caller's unread ones read; tell every session of the user."""
        wanted = sorted(set(ids))
        async with self._sessionmaker.begin() as session:
            if require_found:
                found = set(
                    await session.scalars(
                        select(Notification.id).where(visible(user_id), Notification.id.in_(wanted))
                    )
                )
                missing = [i for i in wanted if i not in found]
                if missing:
                    raise NotFound(f"notification {missing[0]} not found")
            changed = await self._set_read(session, unread(user_id) & Notification.id.in_(wanted))
            count = await self._count_unread(session, user_id) if changed else 0
        if changed:
            await self._announce_read(user_id, changed, count)
        return changed

    async def mark_all_read(self, *, user_id: str) -> list[int]:
        async with self._sessionmaker.begin() as session:
            changed = await self._set_read(session, unread(user_id))
        if changed:
            await self._announce_read(user_id, changed, 0)
        return changed

    async def delete(self, *, user_id: str, notification_id: int) -> None:
        """Soft delete: the row stays for the logs, the user never sees it again."""
        async with self._sessionmaker.begin() as session:
            now = utcnow()
            result = await session.execute(
                update(Notification)
                .where(visible(user_id), Notification.id == notification_id)
                .values(deleted_at=now, updated_at=now)
                .returning(Notification.read)
            )
            was_read = result.scalar_one_or_none()
            if was_read is None:
                raise NotFound(f"notification {notification_id} not found")
            count = await self._count_unread(session, user_id)
        await self._notifier.emit_to_user(user_id, "notification_deleted", {"id": notification_id})
        if not was_read:
            await self._notifier.emit_to_user(user_id, "unread_count", {"count": count})

    @staticmethod
    async def _set_read(session: AsyncSession, condition: Any) -> list[int]:
        now = utcnow()
        result = await session.execute(
            update(Notification)
            .where(condition)
            .values(read=True, read_at=now, updated_at=now)
            .returning(Notification.id),
            execution_options={"synchronize_session": False},
        )
        return sorted(result.scalars().all())

    async def _announce_read(self, user_id: str, ids: list[int], count: int) -> None:
        await self._notifier.emit_to_user(user_id, "notifications_read", {"ids": ids})
        await self._notifier.emit_to_user(user_id, "unread_count", {"count": count})
