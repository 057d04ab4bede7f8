"""The email worker: claims due rows, sends them, settles each: sent, retried, failed, skipped."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..config import Settings
from ..db import is_unavailable
from ..logs import one_line
from ..metrics import Metrics
from ..models import EmailLog, Notification, utcnow
from ..services import activity
from ..services.digests import queue_digests
from . import queue, tokens
from .compose import Composed, compose
from .policy import DIGEST_PERIODS
from .transport import DeliveryError, Transport, make_transport

log = logging.getLogger(__name__)
DIGEST_CHECK_SECONDS = 60.0


class EmailWorker:
    """One per process; several (or several processes) may share one database safely."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        transport: Transport | None = None,
        batch_size: int = 10,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._metrics = metrics or Metrics()
        self._settings = settings
        self.transport = transport or make_transport(settings)
        self._batch_size = batch_size
        self._rng = rng or random.Random()
        self._key = tokens.signing_key(settings)

    def backoff(self, attempts: int) -> timedelta:
        """Exponential from EMAIL_BACKOFF_SECONDS, with jitter in [50%, 100%] of the step."""
        step = self._settings.email_backoff_seconds * 2 ** max(attempts - 1, 0)
        return timedelta(seconds=step * (0.5 + self._rng.random() / 2))

    async def run_once(self, *, now: datetime | None = None) -> int:
        """Claim and settle one batch; returns how many rows it handled."""
        at = now or utcnow()
        async with self._sessionmaker.begin() as session:
            rows = await queue.claim(
                session,
                now=at,
                lease_seconds=self._settings.email_lease_seconds,
                limit=self._batch_size,
            )
        await asyncio.gather(*(self._deliver(row, now) for row in rows))
        return len(rows)

    async def drain(self, *, now: datetime | None = None) -> int:
        """Run batches until nothing is due (tests and the CLI)."""
        total = 0
        while handled := await self.run_once(now=now):
            total += handled
        return total

    async def run_digests(self, *, now: datetime | None = None) -> int:
        queued = 0
        for period in DIGEST_PERIODS:
            plans = await queue_digests(self._sessionmaker, period=period, now=now or utcnow())
            queued += sum(1 for plan in plans if plan.queued)
        return queued

    async def _deliver(self, row: EmailLog, fixed_now: datetime | None) -> None:
        settings = self._settings
        now = fixed_now or utcnow()
        if row.attempts > settings.email_max_attempts:
            # Only reachable when the last attempt's worker died mid-send and its lease ran out.
            await self._settle(row, now, queue.FAILED, failed_reason="gave up: attempts exhausted")
            return
        try:
            async with self._sessionmaker() as session:
                composed = await compose(session, row, settings=settings, key=self._key, now=now)
        except Exception as exc:  # a bug or a bad row must not stop the queue
            if is_unavailable(exc):
                raise  # the row is fine; the database is away (the pass waits and retries)
            log.exception("email %s could not be composed", row.id)
            await self._settle(row, now, queue.FAILED, failed_reason=f"cannot compose: {exc}")
            return
        if not isinstance(composed, Composed):
            log.info("email %s to user %s skipped: %s", row.id, row.user_id, composed)
            await self._settle(row, now, queue.SKIPPED, failed_reason=composed)
            return
        assert row.recipient is not None
        started = time.perf_counter()
        try:
            await self.transport.send(composed.message, recipient=row.recipient)
        except DeliveryError as exc:
            self._metrics.email_send.observe(time.perf_counter() - started)
            await self._failed_attempt(row, exc, fixed_now)
            return
        except Exception as exc:  # unexpected: count it as an attempt rather than wait a lease
            log.exception("email %s: unexpected error while sending", row.id)
            reason = f"unexpected error: {exc!r}"
            await self._failed_attempt(row, DeliveryError(reason, permanent=False), fixed_now)
            return
        self._metrics.email_send.observe(time.perf_counter() - started)
        done = fixed_now or utcnow()
        await self._settle(
            row, done, queue.SENT, sent_at=done, subject=composed.subject, failed_reason=None
        )
        log.info("email %s sent to user %s via %s", row.id, row.user_id, self.transport.name)

    async def _failed_attempt(
        self, row: EmailLog, exc: DeliveryError, fixed_now: datetime | None
    ) -> None:
        now = fixed_now or utcnow()
        attempt = f"attempt {row.attempts}: {exc.reason}"
        if exc.permanent or row.attempts >= self._settings.email_max_attempts:
            log.warning("email %s to user %s failed: %s", row.id, row.user_id, attempt)
            await self._settle(row, now, queue.FAILED, failed_reason=exc.reason)
            return
        retry_at = now + self.backoff(row.attempts)
        log.info("email %s %s; retrying at %s", row.id, attempt, retry_at.isoformat())
        await self._settle(row, now, queue.QUEUED, next_attempt_at=retry_at, failed_reason=attempt)

    async def _settle(self, row: EmailLog, now: datetime, status: str, **values: object) -> None:
        async with self._sessionmaker.begin() as session:
            if not await queue.settle(session, row, now=now, status=status, **values):
                log.warning("email %s was reclaimed by another worker; outcome dropped", row.id)
                return
            kind = OUTCOME_STEPS.get(status)
            if kind is not None and row.notification_id is not None:
                await _record_outcome(session, row, kind, now, values.get("failed_reason"))
        self._metrics.emails.labels("retry" if status == queue.QUEUED else status).inc()

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        """Poll until `stop` is set (checked between batches) or cancelled; digests each minute.

        A failing pass waits longer each time (doubling from EMAIL_POLL_SECONDS up to
        DB_RETRY_MAX_SECONDS); a database outage is logged once when it starts and once when it
        ends, not once per try.
        """
        stop = stop or asyncio.Event()
        next_digest_check = 0.0
        loop = asyncio.get_running_loop()
        poll = self._settings.email_poll_seconds
        delay = poll
        outage_since: float | None = None
        log.info("email worker started (%s)", self.transport.name)
        while not stop.is_set():
            try:
                if loop.time() >= next_digest_check:
                    await self.run_digests()
                    next_digest_check = loop.time() + DIGEST_CHECK_SECONDS
                handled = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                handled = 0
                if not is_unavailable(exc):
                    log.exception("email worker pass failed")
                elif outage_since is None:
                    outage_since = loop.time()
                    log.warning(
                        "email worker: database unavailable (%s); retrying with backoff",
                        one_line(exc),
                    )
                delay = min(delay * 2, max(self._settings.db_retry_max_seconds, poll))
            else:
                if outage_since is not None:
                    log.warning(
                        "email worker: database reachable again after %.0f s",
                        loop.time() - outage_since,
                    )
                    outage_since = None
                delay = poll
            if not handled:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass


# An immediate email's final outcome, as a step of its notification's timeline.
OUTCOME_STEPS = {
    queue.SENT: activity.EMAILED,
    queue.FAILED: activity.EMAIL_FAILED,
    queue.SKIPPED: activity.EMAIL_SKIPPED,
}


async def _record_outcome(
    session: AsyncSession, row: EmailLog, kind: str, now: datetime, reason: object
) -> None:
    type_ = await session.scalar(
        select(Notification.type).where(Notification.id == row.notification_id)
    )
    if type_ is None or row.notification_id is None:
        return
    detail: dict[str, object] = {"email_log_id": row.id, "attempts": row.attempts}
    if isinstance(reason, str):
        detail["reason"] = reason
    step = activity.step(row.notification_id, row.user_id, type_, kind, now, detail)
    await activity.record(session, [step])
