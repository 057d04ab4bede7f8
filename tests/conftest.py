"""Fixtures: real PostgreSQL and Redis, a real listening server, real Socket.IO clients."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import socketio
from aiohttp import web

from backend.app import create_app
from backend.config import Secret, Settings
from backend.security import SCOPE_ADMIN, SCOPE_PUBLISH, TokenVerifier

from .servers import PostgresServer, RedisServer, free_port, start_postgres, start_redis

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


def postgres_of_its_own() -> Iterator[PostgresServer]:
    """A cluster of the test's (or module's) own: stopping or restarting it must not disturb the
    others."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


own_postgres = pytest.fixture(postgres_of_its_own, name="own_postgres")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()


async def create_pg_database(server: PostgresServer) -> str:
    name = f"test_{next(_db_counter)}"
    connection = await asyncpg.connect(server.admin_dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return server.url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every storage and API test runs on both databases."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return await create_pg_database(server)


def make_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    base = Settings(
        database_url=database_url,
        port=0,
        jwt_secret=Secret(TEST_SECRET),
        email_outbox_dir=str(tmp_path / "outbox"),
        cleanup_interval_seconds=3600,
        stats_interval_seconds=3600,
        # Short pings: a long-polling client's disconnect waits for its pending poll.
        ping_interval_seconds=2,
        ping_timeout_seconds=2,
    )
    return base.with_overrides(**overrides)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path)


class RunningServer:
    """create_app on a real TCP port; stop() and start() again keep the same port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.runner: web.AppRunner | None = None
        self.verifier = TokenVerifier(settings)
        self.http = aiohttp.ClientSession()
        self.clients: list[socketio.AsyncClient] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def app(self) -> web.Application:
        assert self.runner is not None
        return self.runner.app

    async def start(self) -> None:
        self.runner = web.AppRunner(create_app(self.settings), handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def close(self) -> None:
        for client in self.clients:
            if client.connected:
                await client.disconnect()
        await self.stop()
        await self.http.close()

    def token(self, sub: str, *scopes: str, **claims: Any) -> str:
        return self.verifier.issue(sub, scopes=scopes, **claims)

    def auth(self, sub: str, *scopes: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, *scopes)}"}

    async def request(
        self, method: str, path: str, *, sub: str | None = None, scopes: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> tuple[int, Any]:  # fmt: skip
        headers = dict(kwargs.pop("headers", {}))
        if sub is not None:
            headers.update(self.auth(sub, *scopes))
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as resp:
            text = await resp.text()
            body = None
            if text:
                body = await resp.json(content_type=None)
            return resp.status, body

    async def publish(self, user_ids: list[str], **fields: Any) -> list[dict[str, Any]]:
        body = {"user_ids": user_ids, "type": "test", "title": "Hello", **fields}
        status, answer = await self.request(
            "POST", "/api/v1/notifications", sub="publisher", scopes=(SCOPE_PUBLISH,), json=body
        )
        assert status == 201, answer
        return answer["notifications"]

    async def connect(
        self, sub: str, *, auth: dict[str, Any] | None = None, transports: list[str] | None = None
    ) -> Recorder:
        recorder = Recorder()
        client = recorder.client
        self.clients.append(client)
        await client.connect(
            self.url,
            auth=auth if auth is not None else {"token": self.token(sub)},
            transports=transports or ["websocket"],
            wait_timeout=10,
        )
        return recorder


async def refused_connect(server: RunningServer, auth: dict[str, Any]) -> list[Any]:
    """Connect with this auth, which the server must refuse; its connect_error payloads."""
    recorder = Recorder()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await recorder.client.connect(
            server.url, auth=auth, transports=["websocket"], wait_timeout=5
        )
    return recorder.connect_errors


class Recorder:
    """A python-socketio client that records every event it receives."""

    def __init__(self, http_session: aiohttp.ClientSession | None = None) -> None:
        # http_session: e.g. one bound to a source address (tests behind a proxy)
        options = {"http_session": http_session} if http_session is not None else {}
        self.client = socketio.AsyncClient(reconnection=False, **options)
        self.events: list[tuple[str, Any]] = []
        self.connect_errors: list[Any] = []
        self._changed = asyncio.Event()

        @self.client.on("*")
        async def catch_all(event: str, data: Any = None) -> None:
            self.events.append((event, data))
            self._changed.set()

        @self.client.event
        async def connect_error(data: Any) -> None:
            self.connect_errors.append(data)
            self._changed.set()

    def of(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    async def wait_for(self, event: str, count: int = 1, timeout: float = 5.0) -> list[Any]:
        async with asyncio.timeout(timeout):
            while len(self.of(event)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.of(event)

    async def call(self, event: str, data: Any = None, timeout: float = 5.0) -> Any:
        return await self.client.call(event, data, timeout=timeout)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[RunningServer]:
    running = RunningServer(settings)
    await running.start()
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def server_on_own_postgres(
    own_postgres: PostgresServer, tmp_path: Path
) -> AsyncIterator[RunningServer]:
    """A started server on a PostgreSQL cluster of the test's own, which the test may halt and
    resume (`own_postgres.halt()` / `.resume()`) without disturbing any other test."""
    running = RunningServer(make_settings(await create_pg_database(own_postgres), tmp_path))
    await running.start()
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def make_server(
    database_url: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[RunningServer]]]:
    """Servers with settings of the test's choosing, on the test's database; closed after."""
    started: list[RunningServer] = []

    async def start(**overrides: Any) -> RunningServer:
        running = RunningServer(make_settings(database_url, tmp_path, **overrides))
        started.append(running)
        await running.start()
        return running

    yield start
    for running in started:
        await running.close()


__all__ = ["SCOPE_ADMIN", "SCOPE_PUBLISH", "Recorder", "RunningServer", "make_settings"]
