"""Durable recovery: what a session missed, from the database, then live, with no seam.

The session's live notifications are held from the moment it joins its room; the database is
read after `last_seq` in pages, oldest first; then what was held is flushed (skipping what the
pages already sent) until nothing is left, and only then does live delivery resume. The swap
and the release happen without an await in between, so nothing slips past.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from .delivery import NOTIFICATION, DeliveryControl
from .notifier import Notifier

Fetch = Callable[[str, int, int], Awaitable[list[dict[str, Any]]]]
# (user, after_seq, page size, most missing) -> (latest seq, too far behind, first page)
Start = Callable[[str, int, int, int], Awaitable[tuple[int, bool, list[dict[str, Any]]]]]


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    recovered: bool
    count: int
    last_seq: int

    def as_dict(self) -> dict[str, Any]:
        return {"recovered": self.recovered, "count": self.count, "last_seq": self.last_seq}


class Recovery:
    def __init__(
        self,
        *,
        control: DeliveryControl,
        notifier: Notifier,
        start: Start,
        fetch: Fetch,
        page_size: int,
        max_notifications: int,
    ) -> None:
        self._control = control
        self._notifier = notifier
        self._start = start
        self._fetch = fetch
        self._page_size = page_size
        self._max = max_notifications
        # by outcome, read by /metrics: recovered, too_far (here); failed, deferred (callers)
        self.outcomes = {"recovered": 0, "too_far": 0, "failed": 0, "deferred": 0}

    def hold(self, sid: str) -> None:
        """Call before the session joins its room (or at once for a running session)."""
        self._control.hold(sid)

    async def recover(
        self, sid: str, user_id: str, after_seq: int, skip: AbstractSet[int] = frozenset()
    ) -> RecoveryResult:
        """Send every visible notification after `after_seq` but those in `skip` (which the
        session already has), then release the hold."""
        cursor = after_seq
        sent = 0
        try:
            last_seq, too_far, page = await self._start(
                user_id, after_seq, self._page_size, self._max
            )
            if too_far:
                # Too far behind (or from another database): the client refetches over REST.
                self._control.release(sid)
                self._control.note_sent(sid, last_seq)
                self.outcomes["too_far"] += 1
                return RecoveryResult(False, 0, last_seq)
            while True:
                fresh = [item for item in page if item["seq"] not in skip] if skip else page
                await self._send(sid, fresh)
                if page:
                    cursor = page[-1]["seq"]
                sent += len(fresh)
                if len(page) < self._page_size:
                    break
                page = await self._fetch(user_id, cursor, self._page_size)
            while held := self._control.take_held(sid):
                fresh = []
                for item in sorted(held, key=lambda n: n["seq"]):
                    if item["seq"] > cursor and item["seq"] not in skip:
                        fresh.append(item)
                        cursor = item["seq"]
                await self._send(sid, fresh)
                sent += len(fresh)
        except BaseException:
            self._control.release(sid)
            raise
        # No await since the last take_held() came back empty: nothing can be left behind.
        self._control.release(sid)
        self._control.note_sent(sid, max(cursor, after_seq))  # where a later catch-up starts
        self.outcomes["recovered"] += 1
        return RecoveryResult(True, sent, max(cursor, after_seq))

    async def _send(self, sid: str, items: list[dict[str, Any]]) -> None:
        """A page in order, in one write when the socket is idle."""
        if items:
            messages = [(NOTIFICATION, item) for item in items]
            await self._notifier.emit_many_to_local_session(sid, messages)
