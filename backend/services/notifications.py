"""NotificationService: persist first, broadcast second, every query scoped to its user."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import BindParameter

from .. import codec
from ..codec import SENDABLE_DEPTH
from ..db import asyncpg_engine, dialect_insert, direct
from ..errors import Conflict, DomainError, InProgress, Invalid, NotFound
from ..metrics import Metrics
from ..models import IdempotencyKey, Notification, User, utcnow
from ..realtime.notifier import Notifier
from ..schemas import NotificationCreate, Preferences, isoformat
from . import activity, emails, store
from .batching import GroupCommit
from .templates import Templates

log = logging.getLogger(__name__)

# The columns of the wire form: rows of these (not ORM objects) for lists and recovery pages.
WIRE_COLUMNS = (
    Notification.id,
    Notification.seq,
    Notification.type,
    Notification.title,
    Notification.body,
    Notification.icon,
    Notification.action_url,
    Notification.data,
    Notification.created_at,
    Notification.read_at,
    Notification.delivered_at,
)


def notification_json(row: Any) -> dict[str, Any]:
    """The wire form of a notification (an ORM row, a stored one, or a row of WIRE_COLUMNS),
    the same over REST and Socket.IO."""
    return {
        "id": row.id,
        "seq": row.seq,
        "type": row.type,
        "title": row.title,
        "body": row.body,
        "icon": row.icon,
        "action_url": row.action_url,
        "data": _sendable(row),
        "created_at": isoformat(row.created_at),
        "read_at": isoformat(row.read_at),
        "delivered_at": isoformat(row.delivered_at),
    }


def _sendable(row: Any) -> dict[str, Any]:
    """The row's data, or {} when no encoder could send it: nested past SENDABLE_DEPTH (stored
    before MAX_JSON_DEPTH bounded it, or by hand) or too deep to decode (read as None). The
    notification still goes out, so one bad row never stops its user's recovery, sync or list."""
    data = row.data
    if isinstance(data, dict) and not codec.exceeds_depth(data, SENDABLE_DEPTH):
        return data
    log.warning(
        "notification %s: its stored data cannot be sent (not a JSON object nested at most "
        "%d levels); sent with data {}",
        row.id,
        SENDABLE_DEPTH,
    )
    return {}


@dataclass(frozen=True, slots=True)
class Created:
    notifications: list[dict[str, Any]]
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class _Stored:
    """A committed request: its answer, and what to emit now that it is committed."""

    created: Created
    counts: dict[str, int]
    pushed: list[tuple[str, dict[str, Any]]]
    # when it was built: right after the commit for `create` (perf_counter, for metrics)
    at: float = field(default_factory=time.perf_counter)


# What `store_in` gives back: the stored notifications (`.created.notifications`, the wire
# form, ids included) and what to emit once the transaction committed.
Pending = _Stored


def _stored(rows: Sequence[store.StoredNotification], counts: dict[str, int]) -> _Stored:
    payloads = [notification_json(row) for row in rows]
    pushed = [(row.user_id, p) for row, p in zip(rows, payloads, strict=True) if row.in_app]
    return _Stored(Created(notifications=payloads), {u: counts[u] for u, _ in pushed}, pushed)


class _KeyTaken(Exception):
    """A concurrent request with the same Idempotency-Key committed first."""


def visible(user_id: str | BindParameter[str]) -> Any:
    """What a user may see of their own notifications: not deleted, not in-app-muted."""
    return (
        (Notification.user_id == user_id)
        & Notification.deleted_at.is_(None)
        & Notification.in_app.is_(True)
    )


def unread(user_id: str) -> Any:
    return visible(user_id) & Notification.read.is_(False)


def request_hash(request: NotificationCreate) -> str:
    fields = request.model_dump(mode="json")
    if request.rendered_email is not None:  # a template's email parts are part of the request
        fields["email"] = request.rendered_email.as_payload()
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# Recovery's statements, built once: a reconnect storm runs them a thousand times a second.
_USER: BindParameter[str] = bindparam("user_id")
_AFTER: BindParameter[int] = bindparam("after_seq")
_SEQS = select(User.last_seq, User.purged_seq).where(User.id == _USER)
_COUNT_AFTER = select(func.count()).where(visible(_USER), Notification.seq > _AFTER)
_PAGE_AFTER = (
    select(*WIRE_COLUMNS)
    .where(visible(_USER), Notification.seq > _AFTER)
    .order_by(Notification.seq)
    .limit(bindparam("limit"))
)


async def _page_after(
    session: AsyncSession, user_id: str, after_seq: int, limit: int
) -> list[dict[str, Any]]:
    params = {"user_id": user_id, "after_seq": after_seq, "limit": limit}
    return [notification_json(row) for row in await session.execute(_PAGE_AFTER, params)]


@dataclass(frozen=True, slots=True)
class Backlog:
    """The start of a recovery: the user's latest seq, and the first page unless too far."""

    last_seq: int
    too_far: bool
    page: list[dict[str, Any]]


BATCHES_IN_FLIGHT = 3
# A group-committed batch of at most this many rows, all to named users (a topic's audience is
# known only inside the transaction), may run on PostgreSQL's generic plans (db.direct).
GENERIC_PLAN_ROWS = 64


def _few_rows(requests: Sequence[NotificationCreate]) -> bool:
    rows = 0
    for request in requests:
        if request.topic is not None:
            return False
        rows += len(request.user_ids or ())
    return rows <= GENERIC_PLAN_ROWS


# A batch's idempotency keys get their notification ids in one executemany.
_KEYS = cast(Table, IdempotencyKey.__table__)  # Core, not ORM: a plain executemany
_SET_KEY_IDS = (
    update(_KEYS).where(_KEYS.c.id == bindparam("key_id")).values(notification_ids=bindparam("ids"))
)


class NotificationService:
    """Creates, lists and changes notifications; emits only after the commit."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        notifier: Notifier,
        metrics: Metrics | None = None,
        templates: Templates | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._notifier = notifier
        self._metrics = metrics or Metrics()
        self._templates = templates
        # PostgreSQL through asyncpg: group-committed publishes skip the session (db.direct).
        self._direct: AsyncEngine | None = asyncpg_engine(sessionmaker)
        self.created_total = 0  # read by /metrics
        # Batches in flight lock their users in id order, so they cannot deadlock, and a user's
        # seqs still follow commit order (a later batch waits on the earlier one's row lock).
        self._group: GroupCommit[tuple[str, str, NotificationCreate], _Stored] = GroupCommit(
            self._store_batch, concurrency=BATCHES_IN_FLIGHT
        )

    async def create(
        self,
        *,
        publisher: str,
        publisher_kind: str,
        request: NotificationCreate,
        idempotency_key: str | None = None,
    ) -> Created:
        """`publisher` is who (a token's sub, an event source), `publisher_kind` by which way
        ("token", "api_key", "event", "channel", "stream"); both stay on every row, and the
        kind labels the `notify_notifications_stored_total` metric (`source`)."""
        if request.template is not None:
            # Rendered once, here: the row stores the result, so template edits are not
            # retroactive (and a retry with the same Idempotency-Key replays the first answer).
            if self._templates is None:
                raise Invalid("templates are not available here")
            request = await self._templates.apply(request)
        if idempotency_key is None:
            stored = await self._group.submit((publisher, publisher_kind, request))
        else:
            stored = await self._create_idempotent(
                publisher=publisher,
                publisher_kind=publisher_kind,
                request=request,
                idempotency_key=idempotency_key,
            )
        if not stored.created.replayed:
            await self.announce(stored, source=publisher_kind, committed_at=stored.at)
        return stored.created

    async def store_in(
        self,
        session: AsyncSession,
        *,
        publisher: str,
        publisher_kind: str,
        request: NotificationCreate,
    ) -> Pending:
        """Store one request inside the caller's transaction (an ingested event commits its
        audit row and its notifications together). Nothing is emitted: after the commit, the
        caller passes the result to `announce`; after a rollback, it drops it."""
        [rows], counts = await store.store(
            session, [request], self._after_insert, [publisher], [publisher_kind]
        )
        return _stored(rows, counts)

    async def announce(
        self, pending: Pending, *, source: str = "event", committed_at: float | None = None
    ) -> None:
        """Emit what a committed `store_in` (or create) stored: persist first, broadcast second.
        Without `committed_at`, the caller's commit has just returned."""
        started = time.perf_counter() if committed_at is None else committed_at
        self.created_total += len(pending.created.notifications)
        self._metrics.notifications_stored(pending.created.notifications, source)
        await self._broadcast(pending.pushed, pending.counts)
        if pending.pushed:
            self._metrics.commit_to_emit.observe(time.perf_counter() - started)

    async def _store_batch(self, items: list[tuple[str, str, NotificationCreate]]) -> list[_Stored]:
        """One transaction for every request in the batch (see batching.GroupCommit)."""
        publishers = [publisher for publisher, _, _ in items]
        kinds = [kind for _, kind, _ in items]
        requests = [request for _, _, request in items]
        if self._direct is not None:  # PostgreSQL: the hot path without a session
            grouped, counts = await direct(
                self._direct,
                lambda connection: store.store_direct(
                    connection, requests, emails.immediate_values, publishers, kinds
                ),
                generic_plans=_few_rows(requests),
            )
        else:
            async with self._sessionmaker.begin() as session:
                grouped, counts = await store.store(
                    session, requests, self._after_insert, publishers, kinds
                )
        return [_stored(rows, counts) for rows in grouped]

    async def _create_idempotent(
        self, *, publisher: str, publisher_kind: str, request: NotificationCreate,
        idempotency_key: str,
    ) -> _Stored:  # fmt: skip
        digest = request_hash(request)
        for _attempt in range(3):
            try:
                async with self._sessionmaker.begin() as session:
                    replay = await self._replay(session, publisher, idempotency_key, digest)
                    if replay is not None:
                        return _Stored(replay, {}, [])
                    key_row = await self._claim_key(session, publisher, idempotency_key, digest)
                    [rows], counts = await store.store(
                        session, [request], self._after_insert, [publisher], [publisher_kind]
                    )
                    key_row.notification_ids = [row.id for row in rows]
                return _stored(rows, counts)
            except _KeyTaken:
                continue
        raise InProgress("a request with this Idempotency-Key is still in progress; retry")

    async def create_batch(
        self,
        *,
        publisher: str,
        items: Sequence[tuple[NotificationCreate, str | None]],
        max_recipients: int,
        publisher_kind: str = "token",
    ) -> list[Created]:
        """Store every item (a request and its optional idempotency key) in one transaction:
        all or none. An item whose key was used before with the same request is replayed (its
        first result); with another request, the whole batch is a Conflict. Emits after the
        commit, as single publishes do. Items naming a template are rendered first, each
        failure naming its item."""
        items = [
            (await self._render_item(number, request), key)
            for number, (request, key) in enumerate(items)
        ]
        for _attempt in range(3):
            try:
                results, pending = await self._store_items(
                    publisher, publisher_kind, items, max_recipients
                )
            except _KeyTaken:
                continue
            await self.announce(pending, source=publisher_kind)
            return results
        raise InProgress("a request with one of these idempotency keys is still in progress")

    async def _render_item(self, number: int, request: NotificationCreate) -> NotificationCreate:
        if request.template is None:
            return request
        if self._templates is None:
            raise Invalid("templates are not available here")
        try:
            return await self._templates.apply(request)
        except DomainError as exc:
            details = exc.details
            if isinstance(details, list):
                details = [
                    {**d, "loc": ["items", number, *d.get("loc", [])]} if isinstance(d, dict) else d
                    for d in details
                ]
            raise type(exc)(f"items[{number}]: {exc.message}", details=details) from None

    async def _store_items(
        self,
        publisher: str,
        publisher_kind: str,
        items: Sequence[tuple[NotificationCreate, str | None]],
        max_recipients: int,
    ) -> tuple[list[Created], _Stored]:
        digests = {key: request_hash(request) for request, key in items if key is not None}
        async with self._sessionmaker.begin() as session:
            known = await self._known_keys(session, publisher, list(digests))
            replays: dict[str, list[int]] = {}
            for number, (_request, key) in enumerate(items):
                if key is None or key not in known:
                    continue
                first_hash, ids = known[key]
                if first_hash != digests[key]:
                    raise Conflict(
                        f"items[{number}]: this idempotency key was already used with a "
                        "different notification; nothing was stored",
                        details={"item": number, "idempotency_key": key},
                    )
                replays[key] = ids
            fresh = [(request, key) for request, key in items if key is None or key not in known]
            # Keys first, as a single publish claims its key before it locks its users: the
            # same order everywhere, so a batch and a publish sharing a key and a user never
            # deadlock. Sorted, so two batches sharing keys take them in the same order.
            claimed = await self._claim_keys(
                session, publisher, sorted({k for _, k in fresh if k is not None}), digests
            )
            grouped, counts = await store.store(
                session,
                [request for request, _ in fresh],
                self._after_insert,
                [publisher] * len(fresh),
                [publisher_kind] * len(fresh),
                max_recipients=max_recipients,
            )
            kept = [
                {"key_id": claimed[key], "ids": [row.id for row in rows]}
                for (_, key), rows in zip(fresh, grouped, strict=True)
                if key is not None
            ]
            if kept:
                await session.execute(_SET_KEY_IDS, kept)
            replayed = await self._replayed(session, replays)
        pending = [_stored(rows, counts) for rows in grouped]
        stored = iter(pending)
        results = [replayed[key] if key in replayed else next(stored).created for _, key in items]
        everything = _Stored(
            Created([p for one in pending for p in one.created.notifications]),
            {user: count for one in pending for user, count in one.counts.items()},
            [pushed for one in pending for pushed in one.pushed],
        )
        return results, everything

    @staticmethod
    async def _known_keys(
        session: AsyncSession, owner: str, keys: list[str]
    ) -> dict[str, tuple[str, list[int]]]:
        if not keys:
            return {}
        rows = await session.execute(
            select(
                IdempotencyKey.key, IdempotencyKey.request_hash, IdempotencyKey.notification_ids
            ).where(IdempotencyKey.owner == owner, IdempotencyKey.key.in_(keys))
        )
        return {key: (digest, list(ids or [])) for key, digest, ids in rows}

    @staticmethod
    async def _claim_keys(
        session: AsyncSession, owner: str, keys: list[str], digests: dict[str, str]
    ) -> dict[str, int]:
        """Insert the keys (one statement); a key another request took meanwhile: _KeyTaken."""
        if not keys:
            return {}
        now = utcnow()
        values = [
            {
                "owner": owner,
                "key": key,
                "request_hash": digests[key],
                "notification_ids": [],
                "created_at": now,
            }
            for key in keys
        ]
        statement = (
            dialect_insert(session)(IdempotencyKey)
            .values(values)
            .on_conflict_do_nothing(index_elements=["owner", "key"])
            .returning(IdempotencyKey.key, IdempotencyKey.id)
        )
        claimed: dict[str, int] = dict((await session.execute(statement)).tuples().all())
        if len(claimed) < len(keys):
            raise _KeyTaken
        return claimed

    @staticmethod
    async def _replayed(session: AsyncSession, replays: dict[str, list[int]]) -> dict[str, Created]:
        """The first results of replayed keys, in one query."""
        if not replays:
            return {}
        wanted = sorted({i for ids in replays.values() for i in ids})
        rows = await session.execute(select(*WIRE_COLUMNS).where(Notification.id.in_(wanted)))
        by_id = {row.id: notification_json(row) for row in rows}
        return {
            key: Created([by_id[i] for i in sorted(ids) if i in by_id], replayed=True)
            for key, ids in replays.items()
        }

    async def _after_insert(
        self,
        session: AsyncSession,
        rows: Sequence[store.StoredNotification],
        prefs: dict[str, Preferences],
        addresses: dict[str, str | None],
    ) -> None:
        """Hook inside the creating transaction (emails are queued here)."""
        await emails.queue_immediate(session, rows, prefs, addresses)

    async def purge_idempotency_keys(self, *, older_than: datetime) -> int:
        """Forget Idempotency-Keys past their retention: a retry after that stores anew."""
        async with self._sessionmaker.begin() as session:
            result = await session.execute(
                delete(IdempotencyKey).where(IdempotencyKey.created_at < older_than)
            )
        return int(getattr(result, "rowcount", 0) or 0)

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

    async def _broadcast(
        self, pushed: list[tuple[str, dict[str, Any]]], counts: dict[str, int]
    ) -> None:
        # Each user's notifications, then its exact unread count, in one write per socket.
        messages: dict[str, list[tuple[str, Any]]] = {}
        for user_id, payload in pushed:
            messages.setdefault(user_id, []).append(("notification", payload))
        for user_id, count in counts.items():
            messages.setdefault(user_id, []).append(("unread_count", {"count": count}))
        await self._notifier.emit_to_users(list(messages.items()))

    # -- reading ---------------------------------------------------------------------------

    async def list_page(
        self, *, user_id: str, unread_only: bool, limit: int, cursor: int | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        condition = unread(user_id) if unread_only else visible(user_id)
        if cursor is not None:
            condition = condition & (Notification.id < cursor)
        async with self._sessionmaker() as session:
            rows = list(
                await session.execute(
                    select(*WIRE_COLUMNS)
                    .where(condition)
                    .order_by(Notification.id.desc())
                    .limit(limit + 1)
                )
            )
        next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
        return [notification_json(row) for row in rows[:limit]], next_cursor

    async def unread_count(self, *, user_id: str) -> int:
        async with self._sessionmaker() as session:
            count = await session.scalar(select(User.unread_count).where(User.id == user_id))
        return int(count or 0)

    @staticmethod
    async def _take_unread(session: AsyncSession, user_id: str, read: int) -> int:
        """`read` of the user's unread notifications were just read or deleted: the new count."""
        count = await session.scalar(
            update(User)
            .where(User.id == user_id)
            .values(unread_count=User.unread_count - read)
            .returning(User.unread_count)
        )
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
            return await _page_after(session, user_id, after_seq, limit)

    async def backlog(
        self, *, user_id: str, after_seq: int, limit: int, max_missing: int
    ) -> Backlog:
        """What a session behind by `after_seq` missed: its first page, in one transaction.

        The seq counter bounds the count (each notification takes one seq), so the exact count
        runs only when more than `max_missing` seqs were taken since `after_seq`.
        """
        async with self._sessionmaker() as session:
            seqs = (await session.execute(_SEQS, {"user_id": user_id})).first()
            last_seq, purged_seq = (int(seqs[0]), int(seqs[1])) if seqs else (0, 0)
            if after_seq > last_seq:  # from another database, or made up
                return Backlog(last_seq, too_far=True, page=[])
            if after_seq < purged_seq:  # some of what it missed was purged: no silent gap
                return Backlog(last_seq, too_far=True, page=[])
            if last_seq - after_seq > max_missing:
                params = {"user_id": user_id, "after_seq": after_seq}
                if int(await session.scalar(_COUNT_AFTER, params) or 0) > max_missing:
                    return Backlog(last_seq, too_far=True, page=[])
            page = await _page_after(session, user_id, after_seq, limit)
        return Backlog(last_seq, too_far=False, page=page)

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
            changed = await self._set_read(
                session, user_id, unread(user_id) & Notification.id.in_(wanted)
            )
            count = await self._take_unread(session, user_id, len(changed)) if changed else 0
        if changed:
            await self._announce_read(user_id, changed, count)
        return changed

    async def mark_all_read(self, *, user_id: str) -> list[int]:
        async with self._sessionmaker.begin() as session:
            changed = await self._set_read(session, user_id, unread(user_id))
            count = await self._take_unread(session, user_id, len(changed)) if changed else 0
        if changed:
            await self._announce_read(user_id, changed, count)
        return changed

    async def delete(self, *, user_id: str, notification_id: int) -> None:
        """Soft delete: the row stays for the logs, the user never sees it again."""
        async with self._sessionmaker.begin() as session:
            now = utcnow()
            result = await session.execute(
                update(Notification)
                .where(visible(user_id), Notification.id == notification_id)
                .values(deleted_at=now, updated_at=now)
                .returning(Notification.read, Notification.type)
            )
            found = result.one_or_none()
            if found is None:
                raise NotFound(f"notification {notification_id} not found")
            was_read, type_ = found
            await activity.record(
                session, [activity.step(notification_id, user_id, type_, activity.DELETED, now)]
            )
            count = 0 if was_read else await self._take_unread(session, user_id, 1)
        await self._notifier.emit_to_user(user_id, "notification_deleted", {"id": notification_id})
        if not was_read:
            await self._notifier.emit_to_user(user_id, "unread_count", {"count": count})

    @staticmethod
    async def _set_read(session: AsyncSession, user_id: str, condition: Any) -> list[int]:
        """Mark read, and record a `read` step for each in the same transaction (one
        multi-row insert)."""
        now = utcnow()
        result = await session.execute(
            update(Notification)
            .where(condition)
            .values(read=True, read_at=now, updated_at=now)
            .returning(Notification.id, Notification.type),
            execution_options={"synchronize_session": False},
        )
        rows = sorted(result.all())
        await activity.record(
            session, [activity.step(id_, user_id, type_, activity.READ, now) for id_, type_ in rows]
        )
        return [id_ for id_, _ in rows]

    async def mark_delivered(self, *, user_id: str, seqs: Sequence[int], via: str) -> list[int]:
        """A receipt: the user's notifications with these seqs reached a device. Only the first
        receipt counts (`delivered_at` is set once, with a `delivered` step); a seq that is not
        the caller's, or is already delivered, changes nothing. Returns the ids newly marked."""
        wanted = sorted(set(seqs))
        if not wanted:
            return []
        async with self._sessionmaker.begin() as session:
            now = utcnow()
            result = await session.execute(
                update(Notification)
                .where(
                    visible(user_id),
                    Notification.seq.in_(wanted),
                    Notification.delivered_at.is_(None),
                )
                .values(delivered_at=now)
                .returning(Notification.id, Notification.type, Notification.created_at),
                execution_options={"synchronize_session": False},
            )
            delivered = sorted(result.all())
            rows = [(id_, type_) for id_, type_, _ in delivered]
            detail = {"via": via}
            await activity.record(
                session,
                [
                    activity.step(id_, user_id, type_, activity.DELIVERED, now, detail)
                    for id_, type_ in rows
                ],
            )
        for *_, created_at in delivered:  # after the commit: the first receipt of each
            self._metrics.observe_receipt_latency((now - created_at).total_seconds())
        return [id_ for id_, _ in rows]

    async def _announce_read(self, user_id: str, ids: list[int], count: int) -> None:
        await self._notifier.emit_to_user(user_id, "notifications_read", {"ids": ids})
        await self._notifier.emit_to_user(user_id, "unread_count", {"count": count})
