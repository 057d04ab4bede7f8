"""The servers under test (ours and two references) and the services they need, as processes.

Each start returns a `Running`: its processes, its endpoints and how to read its CPU and RSS.
A server is a list of processes behind a list of endpoints so that a scale-out run (several
processes over Redis, `start(..., procs=k)`) only has to start more of them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import PostgresServer, free_port, postgres_bin, start_postgres

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
NODE_DIR = BENCH / "node"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVERS = ("ours", "ref-python", "ref-python-frozen", "ref-node")


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (resolution 1/CLK_TCK)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_tree_cpu_seconds(pid: int) -> float:
    """A parent's own CPU, its reaped children's (cutime+cstime) and its live children's:
    monotonic while children come and go (PostgreSQL backends)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total = sum(int(x) for x in fields[11:15]) / CLK_TCK
    for child in children_of(pid):
        with contextlib.suppress(OSError):
            total += proc_cpu_seconds(child)
    return total


def proc_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def wait_port(host: str, port: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


@dataclass
class Postgres:
    """A throw-away PostgreSQL cluster, with a fresh database per server under test.

    Durable as in production (issue 16: nothing acknowledged may be lost): fsync,
    synchronous_commit and full_page_writes on, overriding the test suite's settings.
    `durable=False` (`--pg-fsync-off`) measures without the disk, as runs before 2026-12-01 did."""

    server: PostgresServer
    counter: int = 0

    @classmethod
    def start(cls, cpus: str | None = None, durable: bool = True) -> Postgres:
        settings = ("shared_buffers=256MB",)
        if durable:
            settings += ("fsync=on", "synchronous_commit=on", "full_page_writes=on")
        return cls(start_postgres(cpus=cpus, settings=settings))

    def new_database(self) -> str:
        self.counter += 1
        name = f"bench_{os.getpid()}_{self.counter}"
        subprocess.run(
            [str(postgres_bin() / "psql"), "-h", "127.0.0.1", "-p", str(self.server.port), "-U",
             "postgres", "-c", f'CREATE DATABASE "{name}"'],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return self.server.url(name)

    def pids(self) -> list[int]:
        """The postmaster (whose CPU figure includes all its backends')."""
        pid = self.server.postmaster_pid()
        return [] if pid is None else [pid]

    def stop(self) -> None:
        self.server.stop()


@dataclass
class Running:
    name: str
    procs: list[subprocess.Popen[bytes]]
    endpoints: list[tuple[str, int]]
    logs: list[Path]
    side_pids: Callable[[], list[int]] = field(default=lambda: [])

    def url(self, i: int = 0) -> str:
        host, port = self.endpoints[i]
        return f"http://{host}:{port}"

    def cpu_seconds(self) -> float:
        return sum(proc_cpu_seconds(p.pid) for p in self.procs if p.poll() is None)

    def side_cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.side_pids():
            with contextlib.suppress(OSError):
                total += proc_tree_cpu_seconds(pid)
        return total

    def rss_bytes(self) -> int:
        return sum(proc_rss_bytes(p.pid) for p in self.procs if p.poll() is None)

    def rss_each(self) -> list[int]:
        return [proc_rss_bytes(p.pid) if p.poll() is None else 0 for p in self.procs]

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        # Longer under cProfile: it writes its stats on the way out.
        timeout = 60 if os.environ.get("BENCH_PROFILE_DIR") else 10
        for proc in self.procs:
            stop_process(proc, timeout)


def start_server(
    name: str,
    *,
    secret: str,
    cpus: str | None,
    ping_interval: float,
    postgres: Postgres | None = None,
    database_url: str | None = None,
    procs: int = 1,
    redis_url: str | None = None,
    compress: bool = False,
    log_dir: Path | None = None,
) -> Running:
    """Start `name` pinned to `cpus`: one process, or `procs` processes joined over Redis (the
    scale-out shape: agents spread over the endpoints, publishers post to the first one)."""
    if procs > 1 and not redis_url:
        raise ValueError("several processes need redis_url")
    if procs > 1 and name == "ref-node":
        raise NotImplementedError("ref-node over Redis needs @socket.io/redis-adapter")
    host = "127.0.0.1"
    env = dict(os.environ)
    env.update(
        JWT_SECRET=secret,
        PING_INTERVAL_SECONDS=str(ping_interval),
        PING_TIMEOUT_SECONDS="20",
        PING_INTERVAL_MS=str(int(ping_interval * 1000)),
        PING_TIMEOUT_MS="20000",
    )
    if procs > 1 and redis_url:
        env["REDIS_URL"] = redis_url
    # permessage-deflate when the client offers it: ours and node only on request;
    # python-engineio's aiohttp websocket always accepts it.
    env["WEBSOCKET_COMPRESSION"] = "true" if compress else "false"
    env["PER_MESSAGE_DEFLATE"] = "1" if compress else "0"
    side: Callable[[], list[int]] = list
    if name == "ours":
        if database_url == "sqlite":  # a new SQLite file per server start, as PG's databases
            folder = Path(tempfile.mkdtemp(prefix="bench-sqlite-"))
            database_url = f"sqlite+aiosqlite:///{folder / 'ours.db'}"
        if database_url is None:
            if postgres is None:
                raise ValueError("ours needs postgres or database_url")
            database_url = postgres.new_database()
        if postgres is not None:
            side = postgres.pids
        env.update(
            DATABASE_URL=database_url,
            HOST=host,
            LOG_LEVEL="WARNING",
            AUTO_MIGRATE="true",
            # The bench drives one process far past a deployment's per-client limits.
            CONNECTS_PER_SECOND="1000000",
            OUTBOUND_RATE_PER_SECOND="1000000",
            MAX_BODY_BYTES=str(8 * 1024 * 1024),
            EMAIL_WORKER_ENABLED="false",
            STATS_INTERVAL_SECONDS="3600",
            CLEANUP_INTERVAL_SECONDS="3600",
        )
    elif name not in SERVERS:
        raise ValueError(f"unknown server {name!r}; one of {SERVERS}")
    if name == "ref-node" and not (NODE_DIR / "node_modules").is_dir():
        raise RuntimeError("bench/node/node_modules is missing: cd bench/node && npm ci")
    running = Running(name, [], [], [], side)
    try:
        for _ in range(procs):
            # One at a time: ours migrates its database on start.
            port = free_port()
            proc, log = _launch(
                name, host, port, env, cpus, log_dir, redis_url if procs > 1 else None
            )
            running.procs.append(proc)
            running.endpoints.append((host, port))
            running.logs.append(log)
    except BaseException:
        running.stop()
        raise
    return running


def _command(name: str, host: str, port: int, redis_url: str | None) -> tuple[list[str], Path]:
    if name == "ours":
        return [sys.executable, "-m", "backend", "serve"], ROOT
    if name in ("ref-python", "ref-python-frozen"):
        command = [sys.executable, str(BENCH / "ref_python.py"), "--host", host, "--port",
                   str(port)]  # fmt: skip
        if name == "ref-python-frozen":
            command.append("--gc-freeze")
        if redis_url:
            command += ["--redis", redis_url]
        return command, BENCH
    return ["node", str(NODE_DIR / "server.js"), "--host", host, "--port", str(port)], NODE_DIR


def _launch(
    name: str,
    host: str,
    port: int,
    env: dict[str, str],
    cpus: str | None,
    log_dir: Path | None,
    redis_url: str | None,
) -> tuple[subprocess.Popen[bytes], Path]:
    command, cwd = _command(name, host, port, redis_url)
    env = dict(env, PORT=str(port))
    profile_dir = os.environ.get("BENCH_PROFILE_DIR")
    if profile_dir and command[0] == sys.executable:
        # cProfile writes its stats when the server exits on SIGTERM (GracefulExit).
        out = Path(profile_dir) / f"{name}-{port}.prof"
        command = [sys.executable, "-m", "cProfile", "-o", str(out), *command[1:]]
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    log = (log_dir or Path(tempfile.gettempdir())) / f"bench-{name}-{port}.log"
    with open(log, "wb") as out_file:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out_file, stderr=subprocess.STDOUT
        )
    try:
        wait_port(host, port, proc, timeout=60)
    except RuntimeError as exc:
        stop_process(proc)
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{name}: {exc}\n{tail}") from None
    return proc, log
