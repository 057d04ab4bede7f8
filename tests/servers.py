"""Real PostgreSQL and Redis servers on free loopback ports, stopped after: for the test run, and
for bench/ (which pins them to CPUs and gives PostgreSQL more shared buffers)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Outside the ephemeral range 32768-60999, so a client socket never takes our port first.
PORT_RANGE = (20000, 32000)


def free_port() -> int:
    """A port nothing listens on, chosen away from the ephemeral range."""
    start = PORT_RANGE[0] + (os.getpid() * 7919 + time.monotonic_ns()) % 9000
    for candidate in range(start, PORT_RANGE[1]):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return candidate
    raise RuntimeError("no free port in the test range")


def postgres_bin() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL is not installed (initdb not found); run scripts/test.sh")


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    datadir: Path
    owner: str | None
    cpus: str | None = None  # taskset CPU list for the cluster's processes
    options: str = ""  # the server's command-line options, kept for resume()

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        command = list(args)
        if self.cpus:
            command = ["taskset", "-c", self.cpus, *command]
        if self.owner:
            command = ["runuser", "-u", self.owner, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        """Stop the server and remove its data."""
        try:
            self._pg_ctl("-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.datadir.parent, ignore_errors=True)

    def halt(self) -> None:
        """Stop the server, keeping its data (an outage); resume() starts it again."""
        self._pg_ctl("-m", "fast", "stop")

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: sessions are cut, and the server refuses connections while it
        shuts down and starts up ("the database system is shutting down")."""
        self._pg_ctl(
            "-o", self.options, "-l", str(self.datadir.parent / "log"), "-t", "60", "-m", "fast",
            "restart",
        )  # fmt: skip

    def resume(self) -> None:
        self._pg_ctl(
            "-o", self.options, "-l", str(self.datadir.parent / "log"), "-t", "60", "start"
        )

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(postgres_bin() / "pg_ctl"), "-D", str(self.datadir), "-w", *args)

    def postmaster_pid(self) -> int | None:
        """The postmaster, whose children are the cluster's backends."""
        try:
            return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None


def start_postgres(cpus: str | None = None, settings: tuple[str, ...] = ()) -> PostgresServer:
    """initdb + pg_ctl start on a temporary directory; as user postgres when we are root.

    `settings` are extra `-c name=value` server settings; `cpus` pins the cluster (taskset)."""
    bindir = postgres_bin()
    owner = None
    base = Path(tempfile.mkdtemp(prefix="test-pg-"))
    if os.geteuid() == 0:
        owner = "postgres"
        entry = pwd.getpwnam(owner)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    datadir = base / "data"
    port = free_port()
    options = (
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        + "".join(f" -c {setting}" for setting in settings)
    )
    server = PostgresServer("127.0.0.1", port, "postgres", datadir, owner, cpus, options)
    server._run(
        str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "-A", "trust",
        "-E", "UTF8", "--no-sync",
    )  # fmt: skip
    server.resume()
    return server


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; run scripts/test.sh")
    return binary


def start_redis(cpus: str | None = None, *extra: str, port: int | None = None) -> RedisServer:
    """redis-server without persistence; `cpus` pins it (taskset); `extra` are more options;
    `port` starts it again on the port of one that was stopped."""
    port = port or free_port()
    command = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        *extra,
    ]
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    return _spawn_redis(command, port)


def listening(port: int, process: subprocess.Popen[Any], timeout: float = 15) -> bool:
    """Whether `process` listens on the loopback `port` within `timeout`; False as soon as it
    exits. A process that does not make it is killed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    process.kill()
    process.wait(timeout=10)
    return False


def _spawn_redis(command: list[str], port: int) -> RedisServer:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not listening(port, process):
        raise RuntimeError(f"{command[0]} did not start on port {port}")
    return RedisServer(port, process)


SENTINEL_SERVICE = "notifications"


@dataclass
class SentinelGroup:
    """A Redis primary, its replica and the sentinels that watch them, on loopback ports."""

    nodes: list[RedisServer]  # [the first primary, its replica]
    sentinels: list[RedisServer]
    directory: Path
    service: str = SENTINEL_SERVICE

    @property
    def url(self) -> str:
        """REDIS_URL as python-socketio and our clients read it."""
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/0/{self.service}"

    def _ask(self, port: int, *command: str) -> Any:
        import redis

        with redis.Redis(port=port, socket_timeout=2, decode_responses=True) as client:
            return client.execute_command(*command)

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel names it."""
        try:
            _, port = self._ask(
                self.sentinels[0].port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
            )
        except Exception:
            return None
        return int(port)

    def _role(self, port: int) -> str | None:
        try:
            return str(self._ask(port, "ROLE")[0])
        except Exception:
            return None

    def _linked(self, port: int) -> bool:
        try:
            info = self._ask(port, "INFO", "replication")
        except Exception:
            return False
        return bool(info.get("master_link_status") == "up")  # redis-py parses INFO

    def wait_ready(self, timeout: float = 30) -> None:
        """Every sentinel knows the primary and a replica it could promote, linked and in sync."""
        deadline = time.monotonic() + timeout
        primary = self.primary_port()
        while time.monotonic() < deadline:
            primary = self.primary_port()
            replicas = [node.port for node in self.nodes if node.port != primary]
            if primary is not None and all(self._linked(port) for port in replicas):
                known = [self._known_replicas(sentinel.port) for sentinel in self.sentinels]
                if all(set(replicas) <= ports for ports in known):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the sentinels never saw a primary and a replica ({primary})")

    def _known_replicas(self, sentinel_port: int) -> set[int]:
        try:
            rows = self._ask(sentinel_port, "SENTINEL", "REPLICAS", self.service)
        except Exception:
            return set()
        healthy = set()
        for row in rows:
            fields = dict(zip(row[::2], row[1::2], strict=True)) if isinstance(row, list) else row
            if fields.get("flags") == "slave" and fields.get("master-link-status") == "ok":
                healthy.add(int(fields["port"]))
        return healthy

    def failover(self, timeout: float = 30) -> int:
        """SENTINEL FAILOVER: the replica becomes the primary; its port once it acts as one and
        the old primary follows it."""
        old = self.primary_port()
        self._ask(self.sentinels[0].port, "SENTINEL", "FAILOVER", self.service)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = self.primary_port()
            if new is not None and new != old and self._role(new) == "master":
                if old is None or self._role(old) == "slave":
                    return new
            time.sleep(0.1)
        raise RuntimeError(f"no failover from {old} within {timeout} s")

    def stop(self) -> None:
        try:
            for server in [*self.sentinels, *self.nodes]:
                server.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def start_sentinel_group(sentinels: int = 2) -> SentinelGroup:
    """A primary, one replica, and `sentinels` sentinels (quorum 1) monitoring them.

    A sentinel is Redis's own binary in sentinel mode (Debian's `redis-sentinel` is the same
    program); each gets a config file of its own in a temporary directory, which it rewrites."""
    directory = Path(tempfile.mkdtemp(prefix="test-sentinel-"))
    started: list[RedisServer] = []
    group = SentinelGroup(nodes=[], sentinels=[], directory=directory)
    try:
        primary = start_redis(None, "--dir", str(directory))
        started.append(primary)
        # the replica keeps what it receives from the primary in a dump.rdb in its own --dir
        replica = start_redis(
            None, "--dir", str(directory), "--replicaof", "127.0.0.1", str(primary.port)
        )
        started.append(replica)
        group.nodes = [primary, replica]
        for index in range(sentinels):
            port = free_port()
            config = directory / f"sentinel-{index}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary.port} 1\n"
                f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 2000\n"
                f"sentinel failover-timeout {SENTINEL_SERVICE} 10000\n"
            )
            binary = shutil.which("redis-sentinel")
            command = [binary, str(config)] if binary else [
                redis_server_binary(), str(config), "--sentinel"
            ]  # fmt: skip
            group.sentinels.append(_spawn_redis(command, port))
        group.wait_ready()
    except BaseException:
        group.nodes = started
        group.stop()
        raise
    return group
