"""The bus watch: a canary through Redis pub/sub, and catch-up from the database after a gap.

Each process publishes a canary on python-socketio's own channel every interval and looks for
it among the messages its listener receives. Not hearing its own in time (Redis away, the
subscription dropped, the listener stuck), not being subscribed, or failing to publish makes
the process deaf: `/health/ready` says why (503), `notify_bus_deaf` is 1, and the log says so
once, and once more when it hears again.

Notifications are in the database, so a gap loses none: when the listener subscribes again
(python-socketio's retry, or redis-py's own reconnect), when the process hears its canary after
being deaf, or when another process says some of its publishes failed, every local session is
held at once (no await, so no live message slips past) and catches up from the last seq it was
sent, through the same `Recovery` as `sync`: each notification once, in seq order, merged with
the live ones held meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from .delivery import BUS_PREFIX
from .recovery import Recovery

if TYPE_CHECKING:
    from .delivery import DeliveryControl, RedisManager

log = logging.getLogger(__name__)
CANARY = b"canary"
GAP = b"gap"
# A session's own recovery (connect or sync) that a catch-up waits for: at most this long.
OWN_RECOVERY_WAIT_SECONDS = 30.0

Sessions = Callable[[], Iterable[tuple[str, str]]]  # (sid, user id) of every local session
Send = Callable[[str, str, dict[str, Any]], Awaitable[None]]  # (sid, event, data)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


class BusWatch:
    """Bus health for one process (the canary) and the catch-up that follows a gap."""

    def __init__(
        self,
        *,
        manager: RedisManager,
        control: DeliveryControl,
        sessions: Sessions,
        recovery: Recovery,
        send: Send,
        close: Callable[[str], Awaitable[None]],
        interval: float,
        timeout: float,
        concurrency: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._manager = manager
        self._control = control
        self._sessions = sessions
        self._recovery = recovery
        self._send = send
        self._close = close
        self.interval = interval
        self.timeout = timeout
        self.concurrency = concurrency
        self._clock = clock
        # A message can reach Redis up to a publish timeout after a later seq was sent here:
        # a catch-up starts from what was sent before that (each session's floor, delivery.py).
        control.settle_seconds = 2 * timeout
        host = manager.host_id.encode()
        self._canary = BUS_PREFIX + CANARY + b" " + host
        self._gap_notice = BUS_PREFIX + GAP + b" " + host
        self._last_heard = clock()
        # The listener's last message of any kind: a listener working through a backlog (a
        # fan-out on a busy process) is slow, not deaf; its canary is behind the backlog.
        self._last_progress = clock()
        self._subscribed = False
        self._listen_error: str | None = None
        self._publish_error: str | None = None
        self._lost = 0  # publishes that failed or were skipped since the last gap notice
        self._first_outcome = asyncio.Event()
        self._queue: asyncio.Queue[tuple[str, str, int | None, set[int]]] = asyncio.Queue()
        self._queued: set[str] = set()
        self.deaf = False
        self._deaf_since = 0.0
        # counters for /metrics
        self.deaf_episodes = 0
        self.subscribes = 0
        self.gaps = 0
        self.sessions_caught_up = 0
        self.notifications_caught_up = 0
        self.catch_up_failures = 0

    # -- what the manager's listener and publisher report ----------------------------------

    def heard(self, message: bytes) -> None:
        kind, _, host = message[len(BUS_PREFIX) :].partition(b" ")
        if kind == CANARY and message == self._canary:
            self._last_heard = self._clock()
            self._evaluate()
        elif kind == GAP and message != self._gap_notice:
            self.gap(f"process {host.decode(errors='replace')} could not publish")

    def progress(self) -> None:
        """The listener took a message off the subscription (any message)."""
        self._last_progress = self._clock()

    def subscribed(self) -> None:
        """A subscribe confirmation: messages published before it may never have reached us."""
        self._subscribed = True
        self._listen_error = None
        self.subscribes += 1
        self._first_outcome.set()
        self.gap("subscribed again" if self.subscribes > 1 else "subscribed")

    def listen_failed(self, exc: BaseException) -> None:
        self._subscribed = False
        self._listen_error = describe(exc)
        self._control.open_gap()
        self._first_outcome.set()
        self._evaluate()

    def may_publish(self) -> bool:
        """While publishing fails, emits skip Redis: local sessions already have them, and the
        others catch up when the gap notice goes out."""
        return self._publish_error is None

    def publish_failed(self, exc: BaseException | None) -> None:
        self._lost += 1
        if exc is not None and self._publish_error is None:
            self._publish_error = describe(exc)
            self._evaluate()

    # -- health ----------------------------------------------------------------------------

    def reason(self) -> str | None:
        """Why this process is deaf, or None when it hears its own canary in time."""
        thread = getattr(self._manager, "thread", None)
        if thread is not None and thread.done():
            return "the bus listener stopped"
        if self._publish_error is not None:
            return f"cannot publish: {self._publish_error}"
        if not self._subscribed:
            return f"not subscribed: {self._listen_error or 'connecting'}"
        now = self._clock()
        silent = now - self._last_heard
        if silent > self.timeout and now - self._last_progress > self.timeout:
            return f"no canary heard for {silent:.1f} s"
        return None

    def _evaluate(self) -> None:
        reason = self.reason()
        if reason is not None and not self.deaf:
            self.deaf = True
            self._control.open_gap()
            self.deaf_episodes += 1
            self._deaf_since = self._clock()
            log.warning("bus deaf: %s", reason)
        elif reason is None and self.deaf:
            self.deaf = False
            log.warning("bus hearing again after %.1f s", self._clock() - self._deaf_since)
            if self._control.gap_open:  # not caught up since it went deaf
                self.gap("hearing again")

    async def wait_first_outcome(self, timeout: float) -> None:
        """At start: subscribed or failed, so readiness is right from the first probe."""
        try:
            async with asyncio.timeout(timeout):
                await self._first_outcome.wait()
        except TimeoutError:
            pass

    async def run(self) -> None:
        """Every interval: restart a dead listener, publish the canary, judge the silence."""
        while True:
            thread = getattr(self._manager, "thread", None)
            if thread is not None and thread.done():
                self._evaluate()
                log.warning("restarting the bus listener")
                self._subscribed = False
                self._manager.thread = self._manager.server.start_background_task(
                    self._manager._thread
                )
            await self._follow_primary()
            await self._publish_canary()
            self._evaluate()
            before = self._clock()
            await asyncio.sleep(self.interval)
            if self._clock() - before - self.interval > self.timeout:
                # This process's own loop stalled (CPU starved): its listener had no chance to
                # hear anything either, so the silence is judged from now, not from before.
                self._last_progress = self._clock()

    async def _follow_primary(self) -> None:
        """With Sentinel, the canary alone cannot see a process left on the demoted primary (its
        publisher and subscriber both there, it hears itself but no one hears it): each interval
        the manager drops connections that are not on the primary the sentinels name. What was
        published there may have reached no other process, and what the others published may
        not have reached this one: a gap on both sides."""
        try:
            stray = await self._manager.stray_connections()
        except Exception as exc:  # the sentinels away: the canary judges the bus meanwhile
            log.debug("could not ask the sentinels for the primary: %s", describe(exc))
            return
        if stray:
            log.warning("bus connections left on %s, not the primary: reconnecting", stray[0])
            self._control.open_gap()
            self._lost += 1  # the gap notice goes out through the new primary

    async def _publish_canary(self) -> None:
        try:
            # The gap notice goes before any new emit does, so a process that receives a later
            # notification live has already held its sessions to catch up the earlier ones.
            while lost := self._lost:
                await self._manager.publish_raw(self._gap_notice)
                self._lost -= lost
            await self._manager.publish_raw(self._canary)
        except Exception as exc:
            self._publish_error = describe(exc)
            return
        if not self._lost:  # no await since the check: nothing skipped went unannounced
            self._publish_error = None

    # -- catch-up --------------------------------------------------------------------------

    def baseline(self, sid: str, latest_seq: int) -> None:
        """A session without `last_seq` starts from the user's latest seq at connect (read by
        the connect's batched user upsert, not a query of its own)."""
        self._control.note_sent(sid, latest_seq)

    def gap(self, why: str) -> None:
        """Hold every local session now (no await) and queue its catch-up."""
        self.gaps += 1
        control = self._control
        count = 0
        for sid, user_id in self._sessions():
            if sid in self._queued:
                continue  # an earlier catch-up that has not started covers this gap too
            after, skip = control.close_gap(sid)
            if after is None:
                continue  # connecting, with its own recovery to come
            if control.holding.get(sid) is not None:
                self._queue.put_nowait((sid, user_id, None, set()))  # after its own recovery
            else:
                control.hold(sid)
                self._queue.put_nowait((sid, user_id, after, skip))
            self._queued.add(sid)
            count += 1
        control.end_gap()
        if self.reason() is not None:  # still deaf: what follows may be lost too
            control.open_gap()
        if count:
            log.info("bus gap (%s): catching up %d sessions from the database", why, count)

    async def work(self) -> None:
        """One of `concurrency` workers draining the catch-up queue."""
        while True:
            sid, user_id, after, skip = await self._queue.get()
            self._queued.discard(sid)
            try:
                await self._catch_up(sid, user_id, after, skip)
            except Exception:
                log.exception("catch-up of %s failed", sid)

    async def _catch_up(self, sid: str, user_id: str, after: int | None, skip: set[int]) -> None:
        control = self._control
        if after is None:
            deadline = self._clock() + OWN_RECOVERY_WAIT_SECONDS
            while control.holding.get(sid) is not None and self._clock() < deadline:
                await asyncio.sleep(0.05)
            after = control.sent_seq.get(sid)
            if after is None or control.holding.get(sid) is not None:
                return  # gone, or its recovery is stuck: its reconnect will recover
            control.hold(sid)
        elif control.holding.get(sid) is None:
            return  # disconnected while queued (forget() dropped the hold)
        try:
            result = await self._recovery.recover(sid, user_id, after, skip)
        except Exception as exc:
            # The hold is released, so where it stands is unknown: the client reconnects with
            # its own last_seq, as after a deferred recovery.
            self.catch_up_failures += 1
            log.warning("catch-up of %s failed (%s); closing it to reconnect", sid, describe(exc))
            failed = {"recovered": False, "retry": True, "count": 0, "last_seq": after}
            await self._send(sid, "recovery", {**failed, "reason": "catch-up failed"})
            await self._close(sid)
            return
        self.sessions_caught_up += 1
        self.notifications_caught_up += result.count
        if not result.recovered:  # too far behind: the client refetches over REST
            await self._send(sid, "recovery", {**result.as_dict(), "reason": "bus gap"})
