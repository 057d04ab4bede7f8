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


def start_redis(cpus: str | None = None, port: int | None = None) -> RedisServer:
    """redis-server without persistence; `cpus` pins it (taskset); `port` to come back on the
    port of one that was stopped."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; run scripts/test.sh")
    port = port or free_port()
    command = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return RedisServer(port, process)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")
