"""EventIngest: one CloudEvent in, its notifications stored once, the event kept for the audit.

The one way in for events, whatever carried them (HTTP from a Dapr sidecar, a Redis channel or
stream): the adapter parses a `CloudEvent` and calls `ingest`, which answers an `Outcome`.
Exactly once: the event's row, unique on (source, id), commits in the same transaction as its
notifications, so a redelivery (or a delivery racing on another process, whose insert waits
for this one's commit) finds the row and stores nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .. import codec
from ..db import dialect_insert, is_unavailable
from ..events.cloudevents import DAPR_WRAPPED_TYPE, CloudEvent
from ..events.mappings import EventMapping, MissingField
from ..models import Event, utcnow
from ..schemas import NotificationCreate, isoformat
from .notifications import NotificationService
from .retention import purge_batches

log = logging.getLogger(__name__)

STORED = "stored"
DROPPED = "dropped"
PURGE_BATCH = 1000

Status = Literal["stored", "duplicate", "dropped", "retry"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of an event.

    stored: its notifications are committed (`notification_ids`, one per recipient, and their
    wire form in `notifications`), and already emitted;
    duplicate: the same (source, id) was ingested before (`notification_ids` are the first's);
    dropped: it can never succeed (`reason`), recorded when it had a source and id;
    retry: the database is away; nothing was stored, deliver it again later.
    """

    status: Status
    notification_ids: tuple[int, ...] = ()
    reason: str | None = None
    notifications: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dapr_status(self) -> Literal["SUCCESS", "DROP", "RETRY"]:
        if self.status == "dropped":
            return "DROP"
        if self.status == "retry":
            return "RETRY"
        return "SUCCESS"


class _Drop(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Plan:
    """What an event will be recorded as, decided before the transaction."""

    key: str
    subject: str | None
    data: Any
    request: NotificationCreate | None = None
    drop: _Drop | None = None


class EventIngest:
    """Maps and stores events; counts every outcome (read by /metrics)."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        notifications: NotificationService,
        mappings: Mapping[str, EventMapping],
        max_data_bytes: int,
        max_json_depth: int,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._notifications = notifications
        self._mappings = dict(mappings)
        self._max_data_bytes = max_data_bytes
        self._max_json_depth = max_json_depth
        self.outcomes: Counter[str] = Counter()  # status -> count
        self.drops: Counter[str] = Counter()  # drop kind -> count

    async def ingest(self, event: CloudEvent) -> Outcome:
        """Store the event's notifications once; never raises for the database being away."""
        plan = self._plan(event)
        try:
            outcome = await self._record(event, plan)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self.outcomes["retry"] += 1
            return Outcome("retry", reason="the database is unavailable")
        self.outcomes[outcome.status] += 1
        if plan.drop is not None and outcome.status == "dropped":
            self._log_drop(plan.drop, source=event.source, event_id=event.id, key=plan.key)
        return outcome

    def drop_malformed(self, reason: str, *, kind: str = "malformed") -> Outcome:
        """An input that is no CloudEvent we can key (so it is not recorded): logged, counted."""
        self.outcomes["dropped"] += 1
        self._log_drop(_Drop(kind, reason), source=None, event_id=None, key=None)
        return Outcome("dropped", reason=reason)

    def _log_drop(
        self, drop: _Drop, *, source: str | None, event_id: str | None, key: str | None
    ) -> None:
        self.drops[drop.kind] += 1
        log.warning(
            "event dropped (%s): source=%r id=%r key=%r: %s",
            drop.kind, source, event_id, key, drop.reason,
        )  # fmt: skip

    # -- deciding ----------------------------------------------------------------------------

    def _candidates(self, event: CloudEvent) -> list[str]:
        if event.type != DAPR_WRAPPED_TYPE:
            return [event.type]
        keys = [event.mapping_key]
        if event.topic and event.topic not in keys:
            keys.append(event.topic)  # data.event_type unmapped: the topic's mapping
        return keys

    def _plan(self, event: CloudEvent) -> _Plan:
        candidates = self._candidates(event)
        key = next((k for k in candidates if k in self._mappings), candidates[0])
        data = event.data
        if isinstance(data, str | bytes) and (event.datacontenttype or "").endswith("json"):
            try:  # a JSON payload some publishers send as a string
                data = codec.loads(data)
            except ValueError:
                pass
        if codec.exceeds_depth(data, self._max_json_depth):
            drop = _Drop("too_deep", f"data is nested deeper than {self._max_json_depth} levels")
            return _Plan(key, event.subject, None, drop=drop)
        size = codec.encoded_size(data)
        if size > self._max_data_bytes:
            reason = f"data is {size} bytes encoded; the limit is {self._max_data_bytes}"
            return _Plan(key, event.subject, None, drop=_Drop("too_large", reason))
        mapping = self._mappings.get(key)
        if mapping is None:
            tried = " or ".join(repr(k) for k in candidates)
            drop = _Drop("unmapped", f"no mapping for {tried}")
            return _Plan(key, event.subject, data, drop=drop)
        if not isinstance(data, dict):
            drop = _Drop("invalid", "data is not a JSON object")
            return _Plan(key, event.subject, data, drop=drop)
        subject = event.subject or mapping.optional(mapping.subject, data, url=False)
        subject = subject[:255] if subject else None
        try:
            request = self._request(mapping, data)
        except _Drop as drop:
            return _Plan(key, subject, data, drop=drop)
        return _Plan(key, subject, data, request=request)

    @staticmethod
    def _request(mapping: EventMapping, data: dict[str, Any]) -> NotificationCreate:
        recipients = mapping.recipients_for(data)
        if not recipients:
            fields = ", ".join(f"data.{name}" for name in mapping.recipients)
            raise _Drop("no_recipient", f"no recipient: none of {fields} is present")
        try:
            title = mapping.title_for(data)
            body = mapping.body_for(data)
        except MissingField as exc:
            raise _Drop("missing_field", f"the template needs data.{exc.name}") from None
        try:
            return NotificationCreate.model_validate(
                {
                    "user_ids": recipients,
                    "type": mapping.type,
                    "title": title,
                    "body": body,
                    "action_url": mapping.optional(mapping.action_url, data, url=True),
                    "icon": mapping.optional(mapping.icon, data, url=True),
                    "data": data,
                },
                strict=True,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "notification"
            raise _Drop("invalid", f"not a valid notification: {where}: {first['msg']}") from None

    # -- recording ---------------------------------------------------------------------------

    async def _record(self, event: CloudEvent, plan: _Plan) -> Outcome:
        pending = None
        async with self._sessionmaker.begin() as session:
            row_id = await self._claim(session, event, plan)
            if row_id is None:
                ids = await session.scalar(
                    select(Event.notification_ids).where(
                        Event.source == event.source, Event.event_id == event.id
                    )
                )
                return Outcome("duplicate", notification_ids=tuple(ids or ()))
            if plan.request is None:
                assert plan.drop is not None
                return Outcome("dropped", reason=plan.drop.reason)
            pending = await self._notifications.store_in(
                session, publisher=event.source, publisher_kind="event", request=plan.request
            )
            ids = [item["id"] for item in pending.created.notifications]
            await session.execute(
                update(Event).where(Event.id == row_id).values(notification_ids=ids)
            )
        await self._notifications.announce(pending)  # after the commit, never before
        return Outcome(
            "stored", notification_ids=tuple(ids), notifications=pending.created.notifications
        )

    @staticmethod
    async def _claim(session: AsyncSession, event: CloudEvent, plan: _Plan) -> int | None:
        """Insert the event's row, or None when (source, id) is already there. On PostgreSQL a
        concurrent insert of the same key waits here for the other transaction to end."""
        statement = (
            dialect_insert(session)(Event)
            .values(
                source=event.source,
                event_id=event.id,
                type=plan.key if event.type == DAPR_WRAPPED_TYPE else event.type,
                subject=plan.subject,
                time=event.time,
                data=plan.data,
                received_at=utcnow(),
                outcome=STORED if plan.request is not None else DROPPED,
                reason=plan.drop.reason if plan.drop is not None else None,
                notification_ids=[],
            )
            .on_conflict_do_nothing(index_elements=["source", "event_id"])
            .returning(Event.id)
        )
        row_id: int | None = await session.scalar(statement)
        return row_id

    # -- the audit trail ---------------------------------------------------------------------

    async def history(
        self,
        *,
        subject: str | None = None,
        type: str | None = None,  # noqa: A002 - the query parameter's name
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        cursor: int | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Ingested events in the order they were received; `cursor` is the last id seen."""
        statement = select(Event)
        if subject is not None:
            statement = statement.where(Event.subject == subject)
        if type is not None:
            statement = statement.where(Event.type == type)
        if since is not None:
            statement = statement.where(Event.received_at >= since)
        if until is not None:
            statement = statement.where(Event.received_at < until)
        if cursor is not None:
            statement = statement.where(Event.id > cursor)
        async with self._sessionmaker() as session:
            rows = list(await session.scalars(statement.order_by(Event.id).limit(limit + 1)))
        next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
        return [event_json(row) for row in rows[:limit]], next_cursor

    async def purge(
        self, *, older_than: datetime, batch: int = PURGE_BATCH, pause: float = 0.0
    ) -> int:
        """Delete events received before `older_than`, `batch` rows per transaction, so a large
        backlog never holds one long lock. A redelivery of a purged event stores anew."""
        return await purge_batches(
            self._sessionmaker,
            due=select(Event.id).where(Event.received_at < older_than),
            id_column=Event.id,
            batch=batch,
            pause=pause,
        )


def event_json(row: Event) -> dict[str, Any]:
    """The audit view of one ingested event."""
    return {
        "id": row.id,
        "source": row.source,
        "event_id": row.event_id,
        "type": row.type,
        "subject": row.subject,
        "time": isoformat(row.time),
        "data": row.data,
        "received_at": isoformat(row.received_at),
        "outcome": row.outcome,
        "reason": row.reason,
        "notification_ids": list(row.notification_ids or []),
    }
