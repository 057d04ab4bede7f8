"""Behind a real nginx running deploy/nginx.conf, as the README's "Scaling" recipe says: two
`python -m backend` processes on one PostgreSQL and one Redis; the official Python client over
long-polling (sticky), websocket only, and polling upgraded to websocket; a publish through nginx
reaches the clients on both processes."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from backend.config import Secret, Settings
from backend.security import SCOPE_PUBLISH, TokenVerifier

from ..conftest import TEST_SECRET, Recorder, create_pg_database
from ..processes import ROOT, ServerProcess, server_env, start_server
from ..servers import PostgresServer, RedisServer, free_port, listening

DEPLOYED = ROOT / "deploy" / "nginx.conf"
# Each client from its own loopback address, as real clients come from theirs: the upstream is
# chosen by the whole client address. 12 per kind: all on one process has odds of 1 in 2,048.
CLIENTS_PER_KIND = 12
KINDS = {"polling": ["polling"], "websocket": ["websocket"], "upgrade": ["polling", "websocket"]}
LOG_FORMAT = '$remote_addr $upstream_addr $status "$request"'

verifier = TokenVerifier(Settings(jwt_secret=Secret(TEST_SECRET)))


def token(sub: str, *scopes: str) -> str:
    return verifier.issue(sub, scopes=scopes)


def nginx_binary() -> str:
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        raise RuntimeError("nginx is not installed; run scripts/test.sh")
    return binary


def site_config(upstreams: list[int], port: int) -> str:
    """deploy/nginx.conf with the test's ports: each substitution must find its line."""
    text = DEPLOYED.read_text()
    for example, actual in (
        ("server 127.0.0.1:8001;", f"server 127.0.0.1:{upstreams[0]};"),
        ("server 127.0.0.1:8002;", f"server 127.0.0.1:{upstreams[1]};"),
        ("listen 80;", f"listen 127.0.0.1:{port};"),
    ):
        assert text.count(example) == 1, f"deploy/nginx.conf no longer has {example!r}"
        text = text.replace(example, actual)
    return text


@dataclass
class Nginx:
    port: int
    process: subprocess.Popen[bytes]
    access_log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()  # SIGTERM: nginx's fast shutdown
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def upstreams_by_client(self) -> dict[str, set[str]]:
        """Which processes served each client address, from the access log."""
        served: dict[str, set[str]] = defaultdict(set)
        for line in self.access_log.read_text().splitlines():
            client, upstream, *_ = line.split(" ", 2)
            if upstream != "-":
                served[client].add(upstream)
        return served

    def polling_sessions(self) -> dict[str, set[str]]:
        """Which processes served each Engine.IO session's requests (by its `sid`)."""
        served: dict[str, set[str]] = defaultdict(set)
        for line in self.access_log.read_text().splitlines():
            sid = re.search(r"[?&]sid=([^& \"]+)", line)
            if sid:
                served[sid.group(1)].add(line.split(" ", 2)[1])
        return served


def start_nginx(directory: Path, upstreams: list[int]) -> Nginx:
    """nginx in the foreground with its own prefix, pid, logs and temp paths."""
    directory.mkdir()
    port = free_port()
    (directory / "notifications.conf").write_text(site_config(upstreams, port))
    temp = "".join(
        f"    {kind}_temp_path {directory / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    access_log = directory / "access.log"
    # As root, nginx's workers would run as nobody, who cannot enter the test's directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    (directory / "nginx.conf").write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'} warn;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n    log_format upstreams '{LOG_FORMAT}';\n"
        f"    access_log {access_log} upstreams;\n{temp}"
        f"    include {directory / 'notifications.conf'};\n}}\n"
    )
    command = [nginx_binary(), "-p", str(directory), "-c", str(directory / "nginx.conf")]
    test = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert test.returncode == 0, test.stderr
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if listening(port, process):
        return Nginx(port, process, access_log)
    raise RuntimeError(f"nginx did not start: {(directory / 'error.log').read_text()}")


@dataclass
class Cluster:
    nginx: Nginx
    upstreams: list[str]


@pytest.fixture
async def cluster(
    pg_server: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[Cluster]:
    """The recipe: migrate once, start the processes without migrating, put nginx in front."""
    database_url = await create_pg_database(pg_server)
    ports = [free_port(), free_port()]
    shared = {"DATABASE_URL": database_url, "REDIS_URL": redis_server.url}
    # Short pings: a long-polling client's disconnect waits for its pending poll.
    pings = {"PING_INTERVAL_SECONDS": "2", "PING_TIMEOUT_SECONDS": "2"}
    migrate = subprocess.run(
        [sys.executable, "-m", "backend", "migrate"], cwd=ROOT, capture_output=True, text=True,
        env=server_env(tmp_path, ports[0], **shared), timeout=60,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    processes: list[ServerProcess] = []
    nginx = None
    try:
        for port in ports:
            env = server_env(tmp_path, port, AUTO_MIGRATE="false", **shared, **pings)
            processes.append(start_server(env))
        for process in processes:
            process.wait_listening()
        nginx = start_nginx(tmp_path / "nginx", ports)
        yield Cluster(nginx, [f"127.0.0.1:{port}" for port in ports])
    finally:
        if nginx is not None:
            nginx.stop()
        for process in processes:
            process.stop()


async def test_both_transports_through_nginx_reach_clients_on_both_processes(
    cluster: Cluster,
) -> None:
    nginx = cluster.nginx
    clients: list[tuple[str, str, Recorder, aiohttp.ClientSession]] = []
    address = iter(f"127.0.0.{n}" for n in range(2, 250))
    try:
        for kind, transports in KINDS.items():
            for index in range(CLIENTS_PER_KIND):
                source = next(address)
                http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))
                recorder = Recorder(http_session=http)
                user = f"{kind}-{index}"
                clients.append((kind, source, recorder, http))
                # A browser sends its page's origin: the proxy's, which the server recognises
                # as its own only if nginx forwards the Host.
                await recorder.client.connect(
                    nginx.url, auth={"token": token(user)}, transports=transports,
                    headers={"Origin": nginx.url}, wait_timeout=10,
                )  # fmt: skip
        for kind, _, recorder, _ in clients:
            expected = "polling" if kind == "polling" else "websocket"
            async with asyncio.timeout(10):  # the upgrade, for the default transports
                while recorder.client.transport() != expected:
                    await asyncio.sleep(0.05)

        users = [f"{kind}-{index}" for kind in KINDS for index in range(CLIENTS_PER_KIND)]
        async with aiohttp.ClientSession() as http:
            body = {"user_ids": users, "type": "test", "title": "through nginx"}
            headers = {"Authorization": f"Bearer {token('publisher', SCOPE_PUBLISH)}"}
            async with http.post(
                nginx.url + "/api/v1/notifications", json=body, headers=headers
            ) as response:
                assert response.status == 201
            for _, _, recorder, _ in clients:
                [got] = await recorder.wait_for("notification", timeout=10)
                assert got["title"] == "through nginx"
            # A long-polling POST over 4 x MAX_PAYLOAD_BYTES, or a REST body over MAX_BODY_BYTES,
            # reaches the server, which answers its own 413 with the JSON error body.
            async with http.post(
                nginx.url + "/api/v1/notifications",
                data=b'{"title": "' + b"x" * 300_000 + b'"}',
                headers={**headers, "Content-Type": "application/json"},
            ) as response:
                assert response.status == 413
                assert (await response.json())["error"]["code"]
    finally:
        await asyncio.gather(
            *(r.client.disconnect() for _, _, r, _ in clients if r.client.connected)
        )
        for *_, http in clients:
            await http.close()
    await asyncio.sleep(0.5)  # nginx logs a websocket when it closes

    # Every request of every polling session went to one process, and each kind of client was
    # spread over both processes.
    sessions = nginx.polling_sessions()
    assert sessions and all(len(served) == 1 for served in sessions.values()), sessions
    served = nginx.upstreams_by_client()
    for kind in KINDS:
        sources = [source for k, source, _, _ in clients if k == kind]
        assert all(len(served[source]) == 1 for source in sources), served
        assert set().union(*(served[source] for source in sources)) == set(cluster.upstreams)


def seconds(directive: str) -> float:
    """A directive's value in deploy/nginx.conf, in seconds ("60s")."""
    [value] = re.findall(rf"^\s*{directive}\s+(\d+)s;", DEPLOYED.read_text(), re.M)
    return float(value)


def test_the_deployed_nginx_timeouts_and_body_size_agree_with_our_defaults() -> None:
    ours = Settings()
    # A quiet websocket or a held long-poll is ended by the server's pings, never by nginx.
    assert seconds("proxy_read_timeout") > ours.ping_interval_seconds + ours.ping_timeout_seconds
    # nginx drops an idle upstream connection before the server closes it under a request.
    assert seconds("keepalive_timeout") < ours.request_header_timeout_seconds
    assert seconds("client_header_timeout") <= ours.request_header_timeout_seconds
    assert seconds("client_body_timeout") <= ours.request_body_timeout_seconds
    # Bodies the server refuses reach it, so the 413 carries the JSON error body.
    [megabytes] = re.findall(r"client_max_body_size\s+(\d+)m;", DEPLOYED.read_text())
    assert int(megabytes) * 1024 * 1024 > max(ours.max_body_bytes, 4 * ours.max_payload_bytes)
