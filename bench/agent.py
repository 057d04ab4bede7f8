"""A load-generating process: holds connections and/or publishes, driven over stdin/stdout.

    python -m bench.agent --source 127.0.1.1 --secret S

One JSON command per stdin line, one JSON answer per stdout line. Commands: connect, count,
receipts, reset, status, close, reconnect, publish, exit. The garbage collector is off (our
objects hold no cycles worth collecting during a bounded run) and the loop is uvloop's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import time
from typing import Any

import aiohttp
import jwt
import orjson

from .wsclient import Conn, Sink, open_conn

MAX_SECONDS = 3600  # no agent outlives this, whatever the orchestrator does


def make_token(
    secret: str, sub: str, scope: str | None = None, ttl: int = 7200, topics: tuple[str, ...] = ()
) -> str:
    claims: dict[str, Any] = {"sub": sub, "exp": int(time.time()) + ttl}
    if scope:
        claims["scope"] = scope
    if topics:
        claims["topics"] = list(topics)
    return jwt.encode(claims, secret, algorithm="HS256")


class Agent:
    def __init__(self, source: str, secret: str) -> None:
        self.source = source
        self.secret = secret
        self.loop = asyncio.get_running_loop()
        self.sink = Sink()
        self.conns: dict[str, Conn] = {}
        self.endpoint: tuple[str, int] = ("127.0.0.1", 0)
        self.compress = False

    # -- connections --------------------------------------------------------------------------
    async def _connect_many(
        self,
        users: list[str],
        concurrency: int,
        timeout: float,
        extra: dict[str, dict[str, Any]] | None = None,
        compress: bool = False,
    ) -> dict[str, Any]:
        host, port = self.endpoint
        refused: dict[str, int] = {}
        connected = 0
        queue = iter(users)
        started = time.perf_counter()

        async def runner() -> None:
            nonlocal connected
            for user in queue:
                auth: dict[str, Any] = {"token": make_token(self.secret, user)}
                if extra and user in extra:
                    auth.update(extra[user])
                conn, reason = await open_conn(
                    self.loop, user, auth, host, port, self.source, self.sink, timeout,
                    compress=compress,
                )  # fmt: skip
                if conn is None:
                    key = (reason or "?")[:80]
                    refused[key] = refused.get(key, 0) + 1
                else:
                    self.conns[user] = conn
                    connected += 1

        await asyncio.gather(*(runner() for _ in range(max(1, min(concurrency, len(users))))))
        return {
            "connected": connected,
            "refused": refused,
            "elapsed_s": time.perf_counter() - started,
            "open": self.open_count(),
        }

    def open_count(self) -> int:
        return sum(1 for c in self.conns.values() if c.state == "open")

    async def cmd_connect(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.endpoint = (msg["host"], int(msg["port"]))
        users = [f"{msg['prefix']}{i}" for i in range(msg["start"], msg["start"] + msg["count"])]
        self.compress = bool(msg.get("compress"))
        return await self._connect_many(
            users,
            int(msg.get("concurrency", 64)),
            float(msg.get("timeout", 20)),
            compress=self.compress,
        )

    async def cmd_reconnect(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Reconnect every user we hold (closed) with auth.last_seq = the last seq it saw."""
        users = list(self.conns)
        extra = {u: {"last_seq": self.conns[u].last_seq} for u in users}
        seqs = {u: self.conns[u].last_seq for u in users}
        self.conns.clear()
        result = await self._connect_many(
            users,
            int(msg.get("concurrency", 64)),
            float(msg.get("timeout", 20)),
            extra,
            compress=self.compress,
        )
        for user, conn in self.conns.items():
            conn.last_seq = max(conn.last_seq, seqs.get(user, 0))
        return result

    async def cmd_close(self, msg: dict[str, Any]) -> dict[str, Any]:
        closed = 0
        for conn in self.conns.values():
            if conn.state != "closed":
                conn.close()
                closed += 1
        deadline = time.monotonic() + float(msg.get("timeout", 10))
        while time.monotonic() < deadline and any(c.state != "closed" for c in self.conns.values()):
            await asyncio.sleep(0.05)
        if msg.get("forget", True):
            self.conns.clear()
        return {"closed": closed}

    def cmd_count(self, _: dict[str, Any]) -> dict[str, Any]:
        s = self.sink
        return {
            "received": s.received,
            "recoveries": s.recoveries,
            "recovered_false": s.recovered_false,
            "last_recv_ns": s.last_recv_ns,
            "last_recovery_ns": s.last_recovery_ns,
        }

    def cmd_receipts(self, _: dict[str, Any]) -> dict[str, Any]:
        s = self.sink
        return {
            "received": s.received,
            "latencies_us": s.latencies_us,
            "first_recv_ns": s.first_recv_ns,
            "last_recv_ns": s.last_recv_ns,
            "recoveries": s.recoveries,
            "recovered_false": s.recovered_false,
            "last_recovery_ns": s.last_recovery_ns,
        }

    def cmd_reset(self, _: dict[str, Any]) -> dict[str, Any]:
        self.sink.reset()
        for conn in self.conns.values():
            conn.got = 0
        return {"ok": True}

    def cmd_tally(self, _: dict[str, Any]) -> dict[str, Any]:
        """How many held connections received no notification, exactly one, or more, since
        the last reset (the "every client, once" check of a fan-out)."""
        tally = {"none": 0, "once": 0, "more": 0}
        for conn in self.conns.values():
            tally["none" if not conn.got else "once" if conn.got == 1 else "more"] += 1
        return tally

    def cmd_status(self, _: dict[str, Any]) -> dict[str, Any]:
        return {
            "open": self.open_count(),
            "held": len(self.conns),
            "dropped": self.sink.dropped,
            "pings": self.sink.pings,
            "other_events": self.sink.other_events,
        }

    # -- publishing ---------------------------------------------------------------------------
    async def cmd_publish(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Open-loop POSTs: request i is due at t0 + i/rate whatever the answers do.

        `bench_t` is the due time (wall clock, ns), so a server that falls behind is charged for
        the queue it builds (no coordinated omission); `lag_ms` says how late our own sends were.
        """
        url = msg["url"]
        # A fan-out's POSTs may go round-robin to several server processes (as behind a load
        # balancer): chunk j of publish i goes to urls[(i + j) % len(urls)].
        urls: list[str] = msg.get("urls") or [url]
        rate = float(msg["rate"])
        total = int(msg.get("count") or max(1, round(rate * float(msg["duration"]))))
        per_post = int(msg.get("recipients", 1))
        users: list[str] = msg.get("users") or [
            f"{msg['prefix']}{i}" for i in range(msg["start"], msg["start"] + msg["pool"])
        ]
        rng = random.Random(msg.get("seed", 1))
        extra = msg.get("body") or {}
        # a private topic needs the publisher's `topics` claim to name it (issue 15 item 2)
        topics = (extra["topic"],) if extra.get("topic") else ()
        token = make_token(self.secret, "bench-publisher", "notifications:publish", topics=topics)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        statuses: dict[str, int] = {}
        delivered_expected = 0
        max_lag_ns = 0
        http_ms: list[float] = []
        connector = aiohttp.TCPConnector(
            limit=int(msg.get("connections", 32)), local_addr=(self.source, 0)
        )
        timeout = aiohttp.ClientTimeout(total=float(msg.get("request_timeout", 30)))

        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one(body: bytes, n: int, target: str) -> None:
                nonlocal delivered_expected
                t = time.perf_counter()
                try:
                    async with session.post(target, data=body, headers=headers) as resp:
                        await resp.read()
                        key = str(resp.status)
                        if resp.status == 201:
                            delivered_expected += n
                except (aiohttp.ClientError, TimeoutError) as exc:
                    key = type(exc).__name__
                statuses[key] = statuses.get(key, 0) + 1
                http_ms.append((time.perf_counter() - t) * 1000)

            # Open the keep-alive connections before the clock starts: a burst of new
            # connections at a high rate overflows the server's listen backlog (SYN retries).
            bases = [u.split("/api/", 1)[0] for u in urls]

            async def warm(base: str) -> None:
                async with session.get(base + "/health/live") as resp:
                    await resp.read()

            await asyncio.gather(
                *(warm(bases[i % len(bases)]) for i in range(connector.limit)),
                return_exceptions=True,
            )
            tasks: set[asyncio.Task[None]] = set()
            interval_ns = int(1e9 / rate)
            t0 = time.time_ns() + 20_000_000
            started = time.perf_counter()
            for i in range(total):
                due = t0 + i * interval_ns
                now = time.time_ns()
                if due > now:
                    await asyncio.sleep((due - now) / 1e9)
                    now = time.time_ns()
                max_lag_ns = max(max_lag_ns, now - due)
                if batch := int(msg.get("batch") or 0):
                    # One POST /notifications/batch of `batch` items, each to one random user,
                    # of four types (ours only).
                    items = [
                        {"user_ids": [users[rng.randrange(len(users))]], "type": f"bench.{k % 4}",
                         "title": "t", "body": "b", "data": {"bench_t": due}}
                        for k in range(batch)
                    ]  # fmt: skip
                    target = urls[i % len(urls)]
                    task = asyncio.create_task(one(orjson.dumps({"items": items}), batch, target))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    continue
                if msg.get("all_users"):
                    recipients = users
                elif per_post == 1:
                    recipients = [users[rng.randrange(len(users))]]
                else:
                    recipients = rng.sample(users, per_post)
                body = {
                    "type": "bench",
                    "title": "t",
                    "body": "b",
                    "data": {"bench_t": due},
                    **extra,
                }
                if "topic" in extra:
                    chunks = [recipients]
                else:
                    # A server may cap recipients per request (ours: 1000): one fan-out is then
                    # several POSTs sent at the same moment with the same bench_t.
                    size = int(msg.get("chunk") or len(recipients))
                    chunks = [recipients[j : j + size] for j in range(0, len(recipients), size)]
                for j, part in enumerate(chunks):
                    if "topic" not in extra:
                        body["user_ids"] = part
                    target = urls[(i + j) % len(urls)]
                    task = asyncio.create_task(one(orjson.dumps(body), len(part), target))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            send_s = time.perf_counter() - started
            if tasks:
                await asyncio.wait(tasks, timeout=float(msg.get("drain_timeout", 60)))
        http_ms.sort()
        return {
            "posts": total,
            "statuses": statuses,
            "deliveries_expected": delivered_expected,
            "send_s": send_s,
            "lag_ms": max_lag_ns / 1e6,
            "http_p50_ms": http_ms[len(http_ms) // 2] if http_ms else None,
            "http_p99_ms": http_ms[int(len(http_ms) * 0.99)] if http_ms else None,
        }


async def main_async(args: argparse.Namespace) -> None:
    agent = Agent(args.source, args.secret)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer
    handlers = {
        "connect": agent.cmd_connect,
        "reconnect": agent.cmd_reconnect,
        "close": agent.cmd_close,
        "publish": agent.cmd_publish,
        "count": agent.cmd_count,
        "receipts": agent.cmd_receipts,
        "reset": agent.cmd_reset,
        "status": agent.cmd_status,
        "tally": agent.cmd_tally,
    }
    async with asyncio.timeout(MAX_SECONDS):
        while True:
            line = await reader.readline()
            if not line:
                break
            msg = orjson.loads(line)
            cmd = msg.get("cmd")
            if cmd == "exit":
                break
            try:
                result = handlers[cmd](msg)
                if asyncio.iscoroutine(result):
                    result = await result
            except Exception as exc:  # reported to the orchestrator, which decides
                result = {"error": f"{type(exc).__name__}: {exc}"}
            out.write(orjson.dumps(result) + b"\n")
            out.flush()
    for conn in agent.conns.values():
        conn.close()
    await asyncio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", default="127.0.0.1")
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    gc.disable()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
