"""A Python Socket.IO client that gets every notification once: copy it, or import it.

What the server promises, and what a client does for it (README, "Socket.IO"):

- Every notification carries a per-user `seq`. `last_seq` here is the seq up to which this
  client has everything; it goes in the connect `auth`, so every reconnect replays what came
  after it (then a `recovery` event says how it went).
- Over OUTBOUND_RATE_PER_SECOND the server drops the excess and later sends one
  `unread_count {"count", "missed"}`: on `missed`, call `sync {"after_seq": last_seq}`.
- A seq that jumps (seq > last_seq + 1) may hide a dropped one: sync too. A jump can also be a
  hole that nothing fills (a notification muted by preferences, or deleted, still took its
  seq), so each gap asks for one sync and its ack says how far the client is complete: no loop.
- One sync at a time per session (the server refuses a second): one runs, and one more runs
  after it if anything asked meanwhile. The connect's recovery counts as a running sync.
- `recovered: false` (too far behind): the newest page comes over REST instead; but
  `retry: true` (the database was away) only means "reconnecting": the position is kept.
- Receipts: each notification that arrives is acknowledged with `received {"seqs": [...]}`,
  batched (at most RECEIPT_MAX_SEQS, 100, a batch; one batch per RECEIPT_DELAY); the server
  sets `delivered_at` on the first device's receipt, which `email_unless: "delivered"` waits on.
- python-socketio retries a dropped connection, but not one the server ended with an Engine.IO
  CLOSE (this server closes websockets under their clients instead, so they come back; a
  long-polling session still gets CLOSE): this client comes back by itself after those too.

Run it: python docs/examples/client.py http://127.0.0.1:8080 "$TOKEN"
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import socketio

log = logging.getLogger("notification_client")
RECEIPT_DELAY = 0.2  # seconds a receipt waits for others to share its event
RECEIPT_BATCH = 100  # the server's default RECEIPT_MAX_SEQS
RECEIPTS_KEPT = 1000  # waiting while disconnected; the oldest go first (they are best effort)
Notification = dict[str, Any]


class NotificationClient:
    """Calls `on_notification` once per notification, whatever the network or the server did."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        on_notification: Callable[[Notification], None],
        last_seq: int | None = None,  # the one stored last time; None: start from now
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.on_notification = on_notification
        self.last_seq = last_seq or 0
        self._from_now = last_seq is None
        self._ahead: set[int] = set()  # seqs seen above last_seq (after a gap)
        self._syncing = False  # a sync, or the connect's recovery, is running
        self._again = False  # more was asked for while it ran
        self._connection = 0  # a sync from an earlier connection must not touch this one
        self._tasks: set[asyncio.Task[None]] = set()  # referenced until done
        self._closed = False
        self._receipts: list[int] = []  # seqs that arrived and are not acknowledged yet
        self._receipts_due = False
        self.sio = socketio.AsyncClient()
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("session_closed", self._on_session_closed)
        self.sio.on("notification", self._on_notification)
        self.sio.on("unread_count", self._on_unread_count)
        self.sio.on("recovery", self._on_recovery)

    async def connect(self) -> None:
        if self._from_now:
            newest = await self._rest_page(limit=1)
            self.last_seq = newest[0]["seq"] if newest else 0
            self._from_now = False
        await self.sio.connect(self.url, auth=self._auth, transports=["websocket"], wait_timeout=10)

    async def close(self) -> None:
        self._closed = True
        await self.sio.disconnect()

    def _auth(self) -> dict[str, Any]:
        """Called on every reconnect, so it sends the last_seq of that moment."""
        return {"token": self.token, "last_seq": self.last_seq}

    # -- events (each updates the state before its first await, so they apply in order) ---

    def _on_connect(self) -> None:
        self._connection += 1
        if self._receipts and not self._receipts_due:  # what arrived before the drop
            self._receipts_due = True
            self._spawn(self._send_receipts())
        self._syncing, self._again = True, False  # the server is replaying after last_seq

    def _on_disconnect(self, reason: str) -> None:
        if reason == self.sio.reason.SERVER_DISCONNECT and not self._closed:
            self._spawn(self._come_back())

    def _on_session_closed(self, data: dict[str, Any]) -> None:
        # Closed to make room for a newer session of this user: coming back would push one out.
        log.warning("closed by the server: %s", data.get("reason"))
        self._closed = True

    async def _come_back(self) -> None:
        delay = 1.0
        while not self._closed and not self.sio.connected:
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            try:
                await self.connect()
            except (socketio.exceptions.ConnectionError, ValueError) as exc:
                # Refused, unreachable, or the old connection still closing (ValueError).
                log.warning("reconnect failed: %s", exc)
                delay = min(delay * 2, 30.0)

    def _on_notification(self, notification: Notification) -> None:
        seq = notification["seq"]
        self._acknowledge(seq)
        gap = seq > self.last_seq + 1
        if not self._deliver(notification):
            return
        # A sync that is running covers it: the server sends it everything stored after.
        if gap and not self._syncing:
            self.request_sync("seq gap")

    def _on_unread_count(self, data: dict[str, Any]) -> None:
        if data.get("missed"):
            self.request_sync(f"{data['missed']} missed")

    async def _on_recovery(self, result: dict[str, Any]) -> None:
        connection = self._connection
        await self._settle(result)
        if connection == self._connection:
            self._syncing = False
            if self._again:
                self.request_sync("asked during the recovery")

    # -- syncing ---------------------------------------------------------------------------

    def request_sync(self, why: str) -> None:
        self._again = True
        if not self._syncing:
            self._syncing = True
            self._spawn(self._sync(why))

    async def _sync(self, why: str) -> None:
        connection = self._connection
        try:
            while self._again and connection == self._connection:
                self._again = False
                log.info("sync after %d (%s)", self.last_seq, why)
                ack = await self.sio.call("sync", {"after_seq": self.last_seq}, timeout=30)
                if not ack.get("ok"):
                    log.warning("sync refused: %s", ack.get("error"))
                await self._settle(ack)
                why = "asked during the last sync"
        except socketio.exceptions.SocketIOError as exc:
            # Disconnected (the reconnect's recovery catches up) or no answer (the next
            # `missed`, gap or reconnect asks again).
            log.warning("sync failed: %r", exc)
        finally:
            if connection == self._connection:
                self._syncing = False

    async def _settle(self, result: dict[str, Any]) -> None:
        """After a sync's ack or a recovery: everything up to its last_seq has been sent."""
        if result.get("retry"):
            # The database was away: the server closes the connection, this client reconnects
            # with the same last_seq and the recovery runs again. Nothing to fetch now.
            return
        if result.get("recovered") is False:
            log.warning("too far behind to replay; fetching the newest over REST")
            for notification in reversed(await self._rest_page(limit=100)):
                self._deliver(notification)
        if result.get("ok", True) and "last_seq" in result:
            self._advance(result["last_seq"])

    def _deliver(self, notification: Notification) -> bool:
        """Hand it on unless it was seen (by seq); then move last_seq over what is complete."""
        seq = notification["seq"]
        if seq <= self.last_seq or seq in self._ahead:
            return False
        self._ahead.add(seq)
        self._advance(self.last_seq)
        self.on_notification(notification)
        return True

    def _advance(self, seq: int) -> None:
        self.last_seq = max(self.last_seq, seq)
        while self.last_seq + 1 in self._ahead:
            self.last_seq += 1
        self._ahead = {s for s in self._ahead if s > self.last_seq}

    def _acknowledge(self, seq: int) -> None:
        """It reached this device: say so, batched (duplicates are harmless to the server)."""
        self._receipts = [*self._receipts, seq][-RECEIPTS_KEPT:]
        if not self._receipts_due:
            self._receipts_due = True
            self._spawn(self._send_receipts())

    async def _send_receipts(self) -> None:
        await asyncio.sleep(RECEIPT_DELAY)
        self._receipts_due = False
        while self._receipts and self.sio.connected:
            batch, self._receipts = self._receipts[:RECEIPT_BATCH], self._receipts[RECEIPT_BATCH:]
            try:
                await self.sio.emit("received", {"seqs": batch})
            except socketio.exceptions.BadNamespaceError:  # disconnected meanwhile: next time
                self._receipts = batch + self._receipts
                return

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _rest_page(self, *, limit: int) -> list[Notification]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            url = f"{self.url}/api/v1/notifications"
            async with http.get(url, params={"limit": str(limit)}) as response:
                response.raise_for_status()
                page: list[Notification] = (await response.json())["notifications"]
        return page


async def main(url: str, token: str) -> None:
    client = NotificationClient(
        url, token, on_notification=lambda n: print(f"#{n['seq']} {n['title']}", flush=True)
    )
    await client.connect()
    while True:  # the server closes sessions silent for STALE_TIMEOUT_SECONDS (300)
        await asyncio.sleep(60)
        if client.sio.connected:
            try:
                await client.sio.call("heartbeat", timeout=10)
            except socketio.exceptions.TimeoutError:
                pass  # the transport's own pings notice a dead connection


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(sys.argv[1], sys.argv[2]))
