"""One message from a Redis channel or stream in: a CloudEvent or a notification request, out
an `Outcome` (stored, duplicate, dropped with the reason, or retry while the database is away).

Both go through the one NotificationService: a CloudEvent (it has `specversion`) through the
event ingest, keyed by (source, id); a notification request (the body of POST
/api/v1/notifications plus an optional `idempotency_key`) published as `redis:<channel or
stream>`, keyed by (that publisher, the key).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from .. import codec
from ..db import is_unavailable
from ..errors import Conflict, DomainError, InProgress
from ..events.cloudevents import MalformedEvent, parse_structured
from ..logs import one_line
from ..schemas import IdempotencyKey, NotificationCreate
from ..services.events import EventIngest, Outcome
from ..services.notifications import NotificationService

log = logging.getLogger(__name__)

Transport = Literal["channel", "stream"]
_KEY = TypeAdapter(IdempotencyKey)


def publisher_for(name: str) -> str:
    """Who published a notification request read from this channel or stream."""
    return f"redis:{name}"


class _Drop(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class MessageHandler:
    """Decodes, bounds and stores messages; counts them (read by /metrics)."""

    def __init__(
        self,
        *,
        ingest: EventIngest,
        notifications: NotificationService,
        max_body_bytes: int,
        max_json_depth: int,
        max_data_bytes: int,
    ) -> None:
        self._ingest = ingest
        self._notifications = notifications
        self._max_body_bytes = max_body_bytes
        self._max_json_depth = max_json_depth
        self._max_data_bytes = max_data_bytes
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (transport, status) -> count
        self.drops: Counter[str] = Counter()  # why a message was no CloudEvent or request
        self.dead_lettered = 0  # stream messages moved to <stream>.dead

    async def handle(
        self, raw: bytes, *, transport: Transport, name: str, message_id: str | None = None
    ) -> Outcome:
        """Never raises for bad input or a database outage (`dropped`, `retry`)."""
        where = f"{transport} {name}" + (f" message {message_id}" if message_id else "")
        try:
            outcome = await self._handle(raw, transport, name, message_id)
        except _Drop as drop:
            outcome = self.reject(drop.kind, drop.reason, where=where)
        self.outcomes[(transport, outcome.status)] += 1
        return outcome

    def reject(self, kind: str, reason: str, *, where: str) -> Outcome:
        """A message that can never succeed: one log line, one count."""
        self.drops[kind] += 1
        log.warning("redis message dropped (%s) from %s: %s", kind, where, reason)
        return Outcome("dropped", reason=reason)

    async def _handle(
        self, raw: bytes, transport: Transport, name: str, message_id: str | None
    ) -> Outcome:
        if len(raw) > self._max_body_bytes:
            limit = self._max_body_bytes
            raise _Drop("too_large", f"the message is {len(raw)} bytes; the limit is {limit}")
        try:
            document = codec.OrjsonModule.loads(raw)
        except codec.TooDeep:
            raise _Drop("too_deep", "nested too deep to decode") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise _Drop("malformed", f"malformed JSON: {one_line(exc)}") from None
        if not isinstance(document, dict):
            raise _Drop("malformed", "not a JSON object")
        depth = self._max_json_depth
        if "specversion" in document:
            # As over HTTP: the event's data is one level down, and still held to the depth.
            if codec.exceeds_depth(document, depth + 1):
                raise _Drop("too_deep", f"nested deeper than {depth} levels")
            try:
                event = parse_structured(document)
            except MalformedEvent as exc:
                raise _Drop("malformed", str(exc)) from None
            return await self._ingest.ingest(event)
        if codec.exceeds_depth(document, depth):
            raise _Drop("too_deep", f"nested deeper than {depth} levels")
        # Redelivered stream messages without a key of their own are stored once by theirs.
        fallback = f"{name}:{message_id}" if transport == "stream" and message_id else None
        return await self._request(
            document, publisher=publisher_for(name), kind=transport, fallback_key=fallback
        )

    async def _request(
        self,
        document: dict[str, Any],
        *,
        publisher: str,
        kind: Transport,
        fallback_key: str | None,
    ) -> Outcome:
        fields = dict(document)
        key = fields.pop("idempotency_key", None)
        try:
            if key is not None:
                key = _KEY.validate_python(key, strict=True)
            request = NotificationCreate.model_validate(fields, strict=True)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the request"
            reason = f"not a notification request or CloudEvent: {where}: {first['msg']}"
            raise _Drop("invalid", reason) from None
        size = codec.encoded_size(request.data)
        if size > self._max_data_bytes:
            limit = self._max_data_bytes
            raise _Drop("too_large", f"data is {size} bytes encoded; the limit is {limit}")
        try:
            created = await self._notifications.create(
                publisher=publisher,
                publisher_kind=kind,
                request=request,
                idempotency_key=key or fallback_key,
            )
        except InProgress as exc:  # the first delivery is still committing: try again
            return Outcome("retry", reason=exc.message)
        except Conflict as exc:  # the key was used with another body
            raise _Drop("conflict", exc.message) from None
        except DomainError as exc:
            raise _Drop(exc.code, exc.message) from None
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            return Outcome("retry", reason="the database is unavailable")
        ids = tuple(item["id"] for item in created.notifications)
        status: Literal["stored", "duplicate"] = "duplicate" if created.replayed else "stored"
        return Outcome(status, notification_ids=ids, notifications=created.notifications)


class Backoff:
    """Waits that double from `first` up to `cap`; `reset` after a success."""

    def __init__(self, cap: float, first: float = 0.2) -> None:
        self._first = first
        self._cap = max(cap, first)
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._cap)
        return delay

    def reset(self) -> None:
        self._next = self._first


class Outage:
    """An outage is two log lines, when it starts and when it ends, however many tries."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._since: float | None = None

    def begin(self, reason: str) -> None:
        if self._since is None:
            self._since = time.monotonic()
            log.warning("%s unavailable (%s); retrying with backoff", self._what, reason)

    def end(self) -> None:
        if self._since is not None:
            log.warning(
                "%s reachable again after %.0f s", self._what, time.monotonic() - self._since
            )
            self._since = None
