"""The scenarios: connect-hold, fanout, targeted, targeted100, recovery, scale.

Each takes the options and one server name and returns rows (dicts) for the report. The server
is started fresh for each scenario (and each N of connect-hold), pinned to `server_cpus`; the
agents and publishers run on `load_cpus`. CPU is the server process's utime+stime from /proc
(1/100 s resolution), before and after the measured window.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.servers import RedisServer, start_redis

from .agent import make_token
from .harness import AgentPool, percentile
from .servers import Postgres, Running, proc_cpu_seconds, start_server

Row = dict[str, Any]


@dataclass
class Options:
    n: list[int] = field(default_factory=lambda: [1000])
    agents: int = 4
    publishers: int = 2
    server_cpus: str | None = "0"
    load_cpus: str | None = "1"
    db_cpus: str | None = None
    pg_fsync_off: bool = False  # True: PostgreSQL without fsync/synchronous_commit
    ping_interval: float = 25.0
    idle_seconds: float | None = None  # default: two ping intervals
    fanout_repeat: int = 3
    fanout_chunk: int = 1000  # recipients per POST (ours accepts at most 1000)
    targeted_n: int = 1000
    duration: float = 5.0
    rates: list[float] = field(default_factory=lambda: [250, 500, 1000, 2000, 3000, 4000])
    rates100: list[float] = field(default_factory=lambda: [10, 25, 50, 100, 200])
    batch_size: int = 100  # items per POST /notifications/batch
    batch_rates: list[float] = field(default_factory=lambda: [5, 10, 25, 50, 100])
    p99_limit_ms: float = 50.0
    recovery_n: int = 1000
    recovery_k: int = 50
    database_url: str | None = None
    concurrency: int = 64
    compress: bool = False  # offer permessage-deflate (and let every server accept it)
    procs: int = 1  # server processes; > 1 joins them over a Redis the harness starts
    spread_posts: bool = False  # rate ladders: POSTs round-robin over the processes
    secret: str = field(default_factory=lambda: secrets.token_hex(24))
    log: Callable[[str], None] = print


class Env:
    """What outlives one scenario: the PostgreSQL cluster ours runs on."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.postgres: Postgres | None = None
        self.redis: RedisServer | None = None

    def redis_url(self) -> str | None:
        if self.opts.procs <= 1:
            return None
        if self.redis is None:
            self.redis = start_redis(self.opts.db_cpus)
        return self.redis.url

    def pg(self) -> Postgres | None:
        if self.opts.database_url:
            return None
        if self.postgres is None:
            self.postgres = Postgres.start(self.opts.db_cpus, durable=not self.opts.pg_fsync_off)
        return self.postgres

    def close(self) -> None:
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None


@contextlib.asynccontextmanager
async def session(
    env: Env, name: str, n: int, prefix: str, agents: int | None = None
) -> AsyncIterator[tuple[Running, AgentPool, Row]]:
    """A fresh server with n users connected (prefix0..), agents on the load cores."""
    opts = env.opts
    agents = opts.agents if agents is None else agents
    running = await asyncio.to_thread(
        start_server,
        name,
        secret=opts.secret,
        cpus=opts.server_cpus,
        ping_interval=opts.ping_interval,
        postgres=env.pg() if name == "ours" else None,
        database_url=opts.database_url if name == "ours" else None,
        procs=opts.procs,
        redis_url=env.redis_url(),
        compress=opts.compress,
    )
    pool: AgentPool | None = None
    try:
        await asyncio.sleep(0.5)
        pool = await AgentPool.start(
            clients=max(1, min(agents, n)),
            publishers=opts.publishers,
            secret=opts.secret,
            cpus=opts.load_cpus,
        )
        base = {"rss0": running.rss_bytes(), "cpu0": running.cpu_seconds()}
        # Bounded, but never shorter than connecting at 50/s takes.
        conn = await pool.connect(
            running.endpoints,
            prefix,
            n,
            opts.concurrency,
            timeout=60 + n / 50,
            compress=opts.compress,
        )
        conn.update(base)
        conn["rss1"] = running.rss_bytes()
        conn["cpu1"] = running.cpu_seconds()
        if conn["connected"] < n:
            opts.log(f"  {name}: only {conn['connected']}/{n} connected: {conn['refused']}")
        yield running, pool, conn
    finally:
        if pool is not None:
            await pool.stop()
        await asyncio.to_thread(running.stop)


class Meter:
    """Server CPU (and its database's, for ours) over a window."""

    def __init__(self, running: Running) -> None:
        self.running = running
        self.cpu = running.cpu_seconds()
        self.side = running.side_cpu_seconds()
        self.t = time.perf_counter()

    def read(self) -> tuple[float, float, float]:
        return (
            self.running.cpu_seconds() - self.cpu,
            self.running.side_cpu_seconds() - self.side,
            time.perf_counter() - self.t,
        )


def _latency_fields(lat: list[int]) -> Row:
    lat.sort()
    return {
        "p50_ms": round(percentile(lat, 0.50) / 1000, 2),
        "p99_ms": round(percentile(lat, 0.99) / 1000, 2),
        "max_ms": round(lat[-1] / 1000, 2) if lat else None,
    }


async def connect_hold(env: Env, name: str) -> list[Row]:
    opts = env.opts
    rows = []
    idle = opts.idle_seconds if opts.idle_seconds is not None else 2 * opts.ping_interval
    for n in opts.n:
        try:
            rows.append(await _connect_hold_one(env, name, n, idle))
        except Exception as exc:  # keep the sizes already measured
            rows.append({"scenario": "connect-hold", "server": name, "n": n, "error": repr(exc)})
            opts.log(f"  {name} n={n} FAILED: {exc!r}")
    return rows


async def _connect_hold_one(env: Env, name: str, n: int, idle: float) -> Row:
    opts = env.opts
    async with session(env, name, n, f"h{n}u") as (running, pool, conn):
        connected = conn["connected"]
        meter = Meter(running)
        await asyncio.sleep(idle)
        cpu, _, wall = meter.read()
        status = await pool.status()
        rss = running.rss_bytes()
        row = {
            "scenario": "connect-hold",
            "server": name,
            "n": n,
            "connected": connected,
            "refused": conn["refused"],
            "connects_per_s": round(connected / conn["elapsed_s"]),
            "connect_cpu_us": round((conn["cpu1"] - conn["cpu0"]) / max(1, connected) * 1e6),
            "rss_mb": round(rss / 2**20, 1),
            "rss_per_conn_kb": round((rss - conn["rss0"]) / max(1, connected) / 1024, 1),
            "idle_s": round(wall, 1),
            "idle_cpu_pct": round(cpu / wall * 100, 2),
            "pings": status["pings"],
            "open_after_idle": status["open"],
            "drops": status["dropped"],
        }
        opts.log(f"  {row}")
        return row


async def _settle(running: Running, seconds: float = 0.3) -> None:
    """Let the server finish what it does after the last delivery (counts, logs)."""
    await asyncio.sleep(seconds)
    assert running.alive(), f"{running.name} died"


Prepare = Callable[[Running, int, str], Awaitable[None]]


async def fanout(
    env: Env, name: str, mode: str = "users", prepare: Prepare | None = None
) -> list[Row]:
    opts = env.opts
    rows = []
    for n in opts.n:
        async with session(env, name, n, f"f{n}u") as (running, pool, conn):
            if prepare is not None:
                await prepare(running, n, f"f{n}u")
            runs = []
            for r in range(opts.fanout_repeat):
                await pool.reset()
                meter = Meter(running)
                body = {"topic": "everyone"} if mode == "broadcast" else None
                sent = await pool.publish(
                    {"url": running.url() + "/api/v1/notifications", "rate": 1, "count": 1,
                     "prefix": f"f{n}u", "start": 0, "pool": n, "all_users": True,
                     "body": body, "request_timeout": 120, "chunk": opts.fanout_chunk},
                )  # fmt: skip
                expected = min(sent["deliveries_expected"], conn["connected"])
                got = await pool.wait_received(expected, timeout=60) if expected else 0
                await _settle(running)
                cpu, db_cpu, _ = meter.read()
                rec = await pool.receipts()
                lat = sorted(rec["latencies_us"])
                last_ms = lat[-1] / 1000 if lat else float("nan")
                runs.append(
                    {
                        "run": r,
                        "delivered": got,
                        "statuses": sent["statuses"],
                        "last_ms": round(last_ms, 1),
                        "p50_ms": round(percentile(lat, 0.5) / 1000, 1),
                        "deliveries_per_s": round(got / (last_ms / 1000)) if got else 0,
                        "cpu_s": round(cpu, 3),
                        "cpu_us_per_delivery": round(cpu / max(1, got) * 1e6, 1),
                        "deliveries_per_cpu_s": round(got / cpu) if cpu else None,
                        "db_cpu_us_per_delivery": round(db_cpu / max(1, got) * 1e6, 1),
                    }
                )
                opts.log(f"  {name} fanout n={n} {runs[-1]}")
            best = sorted(runs, key=lambda x: x["cpu_s"])[len(runs) // 2]  # the median by CPU
            rows.append(
                {"scenario": f"fanout-{mode}", "server": name, "n": n,
                 "connected": conn["connected"], **{k: v for k, v in best.items() if k != "run"},
                 "runs": runs}
            )  # fmt: skip
    return rows


async def _rate_ladder(
    env: Env, name: str, recipients: int, rates: list[float], scenario: str, batch: int = 0
) -> list[Row]:
    opts = env.opts
    rows: list[Row] = []
    n = opts.targeted_n
    async with session(env, name, n, f"t{recipients}u") as (running, pool, conn):
        for rate in rates:
            await pool.reset()
            meter = Meter(running)
            path = "/api/v1/notifications/batch" if batch else "/api/v1/notifications"
            urls = [running.url(i) + path for i in range(len(running.endpoints))]
            sent = await pool.publish(
                {"url": running.url() + path, "urls": urls if opts.spread_posts else None,
                 "rate": rate,
                 "duration": opts.duration, "prefix": f"t{recipients}u", "start": 0, "pool": n,
                 "recipients": recipients, "batch": batch, "request_timeout": 30,
                 "drain_timeout": 60},
                timeout=opts.duration + 120,
            )  # fmt: skip
            expected = sent["deliveries_expected"]
            got = await pool.wait_received(expected, timeout=10)
            await _settle(running)
            cpu, db_cpu, wall = meter.read()
            rec = await pool.receipts()
            row = {
                "scenario": scenario,
                "server": name,
                "n": n,
                "rate_posts_s": rate,
                "rate_deliveries_s": rate * (batch or recipients),
                "posts": sent["posts"],
                "statuses": sent["statuses"],
                "expected": expected,
                "delivered": got,
                **_latency_fields(rec["latencies_us"]),
                "http_p99_ms": round(sent["http_p99_ms"], 1),
                "publisher_lag_ms": round(sent["lag_ms"], 1),
                "cpu_pct": round(cpu / wall * 100, 1),
                "cpu_us_per_delivery": round(cpu / max(1, got) * 1e6, 1),
                "db_cpu_us_per_delivery": round(db_cpu / max(1, got) * 1e6, 1),
            }
            rows.append(row)
            opts.log(f"  {row}")
            lost = expected - got
            if row["p99_ms"] > 20 * opts.p99_limit_ms or lost > 0.01 * max(1, expected):
                break  # saturated: higher rates only queue
            if not running.alive():
                break
    ok = [r for r in rows if r["p99_ms"] <= opts.p99_limit_ms and r["delivered"] >= r["expected"]]
    best = max((r["rate_posts_s"] for r in ok), default=None)
    for r in rows:
        r["max_rate_p99_ok"] = best
    return rows


async def targeted(env: Env, name: str) -> list[Row]:
    return await _rate_ladder(env, name, 1, env.opts.rates, "targeted")


async def targeted100(env: Env, name: str) -> list[Row]:
    return await _rate_ladder(env, name, 100, env.opts.rates100, "targeted100")


async def batch(env: Env, name: str) -> list[Row]:
    """POST /notifications/batch, `batch_size` single-recipient items of four types each, as an
    open-loop ladder of batches per second (ours only: the references have no batch API)."""
    if name != "ours":
        return [{"scenario": "batch", "server": name, "skipped": "no batch endpoint"}]
    opts = env.opts
    return await _rate_ladder(env, name, 1, opts.batch_rates, "batch", batch=opts.batch_size)


async def recovery(env: Env, name: str) -> list[Row]:
    opts = env.opts
    if name != "ours":
        return [{"scenario": "recovery", "server": name, "skipped": "no persistence"}]
    n, k = opts.recovery_n, opts.recovery_k
    prefix = f"r{n}u"
    async with session(env, name, n, prefix) as (running, pool, conn):
        await pool.all_clients({"cmd": "close", "forget": False})
        sent = await pool.publish(
            {"url": running.url() + "/api/v1/notifications", "rate": 50, "count": k,
             "prefix": prefix, "start": 0, "pool": n, "all_users": True, "request_timeout": 120,
             "chunk": opts.fanout_chunk},
            timeout=600,
        )  # fmt: skip
        await pool.reset()
        meter = Meter(running)
        t0 = time.time_ns()
        answers = await pool.all_clients(
            {"cmd": "reconnect", "concurrency": opts.concurrency, "timeout": 60}, timeout=120
        )
        expected = sent["deliveries_expected"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while loop.time() < deadline:
            counts = await pool.all_clients({"cmd": "count"})
            got = sum(c["received"] for c in counts)
            recovered = sum(c["recoveries"] for c in counts)
            if got >= expected and recovered >= conn["connected"]:
                break
            await asyncio.sleep(0.05)
        await _settle(running)
        cpu, db_cpu, _ = meter.read()
        rec = await pool.receipts()
        end = max(rec["last_recv_ns"], rec["last_recovery_ns"])
        row = {
            "scenario": "recovery",
            "server": name,
            "n": n,
            "missed_each": k,
            "publish_statuses": sent["statuses"],
            "reconnected": sum(a["connected"] for a in answers),
            "expected": expected,
            "delivered": rec["received"],
            "recovery_events": rec["recoveries"],
            "recovered_false": rec["recovered_false"],
            "seconds": round((end - t0) / 1e9, 2),
            "cpu_s": round(cpu, 2),
            "cpu_us_per_delivery": round(cpu / max(1, rec["received"]) * 1e6, 1),
            "db_cpu_s": round(db_cpu, 2),
        }
        opts.log(f"  {row}")
        return [row]


async def fanout_users(env: Env, name: str) -> list[Row]:
    return await fanout(env, name, "users")


BROADCAST_TOPIC = "everyone"


async def subscribe_all(env: Env, running: Running, n: int, prefix: str) -> None:
    """Users prefix0..prefix(n-1) subscribe to BROADCAST_TOPIC over REST (64 at a time)."""
    url = running.url() + f"/api/v1/topics/{BROADCAST_TOPIC}/subscription"
    gate = asyncio.Semaphore(64)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

        async def one(i: int) -> None:
            token = make_token(env.opts.secret, f"{prefix}{i}", topics=(BROADCAST_TOPIC,))
            async with gate, http.put(url, headers={"Authorization": f"Bearer {token}"}) as r:
                if r.status != 204:
                    raise RuntimeError(f"subscribe {prefix}{i}: {r.status} {await r.text()}")

        await asyncio.gather(*(one(i) for i in range(n)))


async def fanout_broadcast(env: Env, name: str) -> list[Row]:
    """One POST `{"topic": "everyone"}`: the references emit it to one room; ours stores one
    notification per subscriber (every connected user subscribes first, over REST) and sends
    each its own."""
    if name != "ours":
        return await fanout(env, name, "broadcast")

    async def prepare(running: Running, n: int, prefix: str) -> None:
        await subscribe_all(env, running, n, prefix)

    return await fanout(env, name, "broadcast", prepare=prepare)


# One agent holds at most this many connections (the per-process limit here is 20,000 fds).
AGENT_CONNECTIONS = 15_000


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


async def scale(env: Env, name: str) -> list[Row]:
    """The small-box figure: N authenticated connections spread over `--procs` server processes
    (one PostgreSQL, one Redis), held through two ping intervals, then one notification to all
    N users (`user_ids` in POSTs of `--fanout-chunk`, round-robin over the processes as behind
    a load balancer), and a check that every client got it exactly once."""
    opts = env.opts
    rows = []
    for n in opts.n:
        try:
            rows.append(await _scale_one(env, name, n))
        except Exception as exc:  # keep the sizes already measured
            rows.append({"scenario": "scale", "server": name, "n": n, "error": repr(exc)})
            opts.log(f"  {name} n={n} FAILED: {exc!r}")
    return rows


async def _scale_one(env: Env, name: str, n: int) -> Row:
    opts = env.opts
    procs = max(1, opts.procs)
    # Every endpoint gets the same number of agents (agent i connects to endpoint i % procs),
    # each agent on its own source address and under AGENT_CONNECTIONS.
    per_endpoint = max(1, -(-opts.agents // procs), -(-n // (procs * AGENT_CONNECTIONS)))
    agents = per_endpoint * procs
    idle = opts.idle_seconds if opts.idle_seconds is not None else 2 * opts.ping_interval
    prefix = f"s{n}u"
    mem0 = _mem_available()
    async with session(env, name, n, prefix, agents=agents) as (running, pool, conn):
        connected = conn["connected"]
        rss_each = running.rss_each()
        opts.log(f"  {name} n={n}: {connected} connected in {conn['elapsed_s']:.1f} s")
        meter = Meter(running)
        redis_pid = env.redis.process.pid if env.redis is not None else None
        redis0 = proc_cpu_seconds(redis_pid) if redis_pid else 0.0
        await asyncio.sleep(idle)
        cpu, db_cpu, wall = meter.read()
        hold = await pool.status()
        opts.log(f"  held {idle:.0f} s: {hold}")

        await pool.reset()
        meter = Meter(running)
        redis1 = proc_cpu_seconds(redis_pid) if redis_pid else 0.0
        url = "/api/v1/notifications"
        sent = await pool.publish(
            {"url": running.url() + url, "urls": [running.url(i) + url for i in range(procs)],
             "rate": 1, "count": 1, "prefix": prefix, "start": 0, "pool": n, "all_users": True,
             "request_timeout": 120, "drain_timeout": 120, "chunk": opts.fanout_chunk},
            timeout=300,
        )  # fmt: skip
        expected = min(sent["deliveries_expected"], connected)
        # Bounded, but long enough to say how long it took when it misses 10 s.
        got = await pool.wait_received(expected, timeout=max(60, n / 500)) if expected else 0
        await _settle(running, 1.0)  # duplicates, if any, arrive now
        fan_cpu, fan_db_cpu, _ = meter.read()
        redis2 = proc_cpu_seconds(redis_pid) if redis_pid else 0.0
        rec = await pool.receipts()
        tally = await pool.tally()
        after = await pool.status()
        lat = sorted(rec["latencies_us"])
        row = {
            "scenario": "scale",
            "server": name,
            "n": n,
            "procs": procs,
            "agents": agents,
            "connected": connected,
            "refused": conn["refused"],
            "connect_s": round(conn["elapsed_s"], 1),
            "connects_per_s": round(connected / conn["elapsed_s"]),
            "connect_cpu_us": round((conn["cpu1"] - conn["cpu0"]) / max(1, connected) * 1e6),
            "rss_each_mb": [round(r / 2**20, 1) for r in rss_each],
            "rss_mb": round(sum(rss_each) / 2**20, 1),
            "rss_per_conn_kb": round((sum(rss_each) - conn["rss0"]) / max(1, connected) / 1024, 1),
            "agents_rss_mb": round(pool.rss_bytes() / 2**20, 1),
            "machine_mem_used_mb": round((mem0 - _mem_available()) / 2**20),
            "idle_s": round(wall, 1),
            "idle_cpu_pct": round(cpu / wall * 100, 1),
            "idle_db_cpu_pct": round(db_cpu / wall * 100, 1),
            "idle_redis_cpu_pct": round((redis1 - redis0) / wall * 100, 1),
            "pings": hold["pings"],
            "open_after_idle": hold["open"],
            "drops": hold["dropped"],
            "statuses": sent["statuses"],
            "expected": expected,
            "delivered": got,
            "tally": tally,
            "last_ms": round(lat[-1] / 1000, 1) if lat else None,
            "p50_ms": round(percentile(lat, 0.5) / 1000, 1),
            "fanout_cpu_s": round(fan_cpu, 2),
            "fanout_db_cpu_s": round(fan_db_cpu, 2),
            "fanout_redis_cpu_s": round(redis2 - redis1, 2),
            "open_at_end": after["open"],
            "drops_at_end": after["dropped"],
        }
        opts.log(f"  {row}")
        return row


SCENARIOS: dict[str, Callable[[Env, str], Awaitable[list[Row]]]] = {
    "connect-hold": connect_hold,
    "fanout": fanout_users,
    "fanout-broadcast": fanout_broadcast,
    "targeted": targeted,
    "targeted100": targeted100,
    "recovery": recovery,
    "batch": batch,
    "scale": scale,
}
