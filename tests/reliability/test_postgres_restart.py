"""PostgreSQL restarting or away under a running server: every answer is a success or a 503 with
Retry-After, a socket event says "unavailable", a reconnecting client keeps its place, and the
email worker says once that the database went away and once that it came back."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import socketio
from sqlalchemy import exc as sa_exc

from backend import migrate
from backend.app import UNAVAILABLE_LOG_INTERVAL_SECONDS
from backend.db import create_engine, create_sessionmaker, is_unavailable
from backend.email.worker import EmailWorker
from backend.security import SCOPE_PUBLISH

from ..conftest import (
    Recorder,
    RunningServer,
    create_pg_database,
    make_settings,
    postgres_of_its_own,
)
from ..servers import PostgresServer

# Bounds of the publishing loop: it stops at whichever comes first.
MAX_POSTS = 3000
MAX_SECONDS = 60.0
POSTERS = 4


# One cluster for this module's tests (they restart and stop it), none of the others'.
own_postgres = pytest.fixture(postgres_of_its_own, scope="module", name="own_postgres")


@pytest.fixture
async def pg_url(own_postgres: PostgresServer) -> str:
    return await create_pg_database(own_postgres)


@pytest.fixture
async def running(pg_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    server = RunningServer(make_settings(pg_url, tmp_path))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.mark.parametrize(
    "driver_error",
    [
        asyncpg.CannotConnectNowError("the database system is shutting down"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        ),
    ],
)
def test_asyncpg_errors_for_a_database_away_are_unavailable_through_sqlalchemys_wrapper(
    driver_error: Exception,
) -> None:
    adapted = RuntimeError(str(driver_error))  # what SQLAlchemy's asyncpg adapter raises
    adapted.__cause__ = driver_error
    wrapped = sa_exc.DBAPIError("SELECT 1", {}, adapted)
    assert is_unavailable(wrapped)
    assert not is_unavailable(sa_exc.DBAPIError("SELECT 1", {}, RuntimeError("a bug")))
    assert not is_unavailable(ValueError("not a database error"))


async def test_every_publish_during_a_postgresql_restart_is_201_or_503_with_retry_after(
    own_postgres: PostgresServer, running: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    await running.publish(["alice"], title="before")
    caplog.set_level(logging.WARNING)
    began = time.monotonic()
    headers = running.auth("publisher", SCOPE_PUBLISH)
    body = {"user_ids": ["alice"], "type": "test", "title": "during a restart"}
    answers: Counter[str] = Counter()
    restart = asyncio.create_task(asyncio.to_thread(own_postgres.restart))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAX_SECONDS
    sent = 0

    async def post_until_restarted() -> None:
        nonlocal sent
        after = 0  # a few more once the restart is over: the pool must have healed
        while after < 10 and sent < MAX_POSTS and loop.time() < deadline:
            sent += 1
            if restart.done():
                after += 1
            async with running.http.post(
                running.url + "/api/v1/notifications", json=body, headers=headers
            ) as resp:
                await resp.read()
                if resp.status == 503 and resp.headers.get("Retry-After", "").isdigit():
                    answers["503 with Retry-After"] += 1
                else:
                    answers[str(resp.status)] += 1

    try:
        await asyncio.gather(*(post_until_restarted() for _ in range(POSTERS)))
    finally:
        await restart
    assert set(answers) <= {"201", "503 with Retry-After"}, answers
    # Not a line per failed request: one per UNAVAILABLE_LOG_INTERVAL_SECONDS at most (the
    # email worker's own line for the outage, when its connection died in use, is not one).
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    unavailable = [line for line in lines if line.startswith("database unavailable on ")]
    assert len(unavailable) <= 1 + (time.monotonic() - began) / UNAVAILABLE_LOG_INTERVAL_SECONDS
    assert not any("retrying one by one" in line for line in lines), lines
    # And it serves again without a restart of ours.
    [after] = await running.publish(["alice"], title="after")
    assert after["title"] == "after"


async def test_a_socket_event_while_the_database_is_down_answers_unavailable(
    own_postgres: PostgresServer, running: RunningServer
) -> None:
    alice = await running.connect("alice")
    await asyncio.to_thread(own_postgres.halt)
    try:
        ack = await alice.call("mark_all_read")
    finally:
        await asyncio.to_thread(own_postgres.resume)
    assert ack["ok"] is False
    assert ack["error"]["code"] == "unavailable"


async def test_a_connect_while_the_database_is_down_is_refused_with_retry_after(
    own_postgres: PostgresServer, running: RunningServer
) -> None:
    carol = Recorder()  # never seen: the server must store who she is
    await asyncio.to_thread(own_postgres.halt)
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await carol.client.connect(
                running.url,
                auth={"token": running.token("carol")},
                transports=["websocket"],
                wait_timeout=10,
            )
    finally:
        await asyncio.to_thread(own_postgres.resume)
    [refusal] = carol.connect_errors
    assert refusal["message"] == "database unavailable, retry in 5 s"
    assert refusal["data"] == {"retry_after": 5}
    again = await running.connect("carol")  # and welcome once it is back
    assert again.client.connected


async def test_recovery_while_the_database_is_down_is_deferred_and_keeps_the_clients_place(
    own_postgres: PostgresServer, running: RunningServer
) -> None:
    alice = await running.connect("alice")  # the server now knows alice
    first, second = [await running.publish(["alice"], title=t) for t in ("one", "two")]
    await alice.wait_for("notification", 2)
    await alice.client.disconnect()

    await asyncio.to_thread(own_postgres.halt)
    try:
        again = await running.connect("alice", auth=_auth(running, last_seq=first[0]["seq"]))
        [deferred] = await again.wait_for("recovery", 1, timeout=10)
        # The transport is closed after it, so a client library reconnects by itself.
        async with asyncio.timeout(10):
            while again.client.connected:
                await asyncio.sleep(0.05)
    finally:
        await asyncio.to_thread(own_postgres.resume)
    assert deferred["recovered"] is False
    assert deferred["retry"] is True
    assert deferred["reason"] == "database unavailable"
    assert deferred["last_seq"] == first[0]["seq"]  # the client's own place, not 0

    back = await running.connect("alice", auth=_auth(running, last_seq=first[0]["seq"]))
    [recovered] = await back.wait_for("recovery", 1, timeout=10)
    assert recovered["recovered"] is True
    assert [n["seq"] for n in back.of("notification")] == [second[0]["seq"]]


def _auth(running: RunningServer, *, last_seq: int) -> dict[str, object]:
    return {"token": running.token("alice"), "last_seq": last_seq}


async def test_the_email_worker_logs_an_outage_once_when_it_starts_and_once_when_it_ends(
    own_postgres: PostgresServer, pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(pg_url, tmp_path, email_poll_seconds=0.05, db_retry_max_seconds=0.4)
    engine = create_engine(settings)
    await migrate.upgrade(engine)
    worker = EmailWorker(sessionmaker=create_sessionmaker(engine), settings=settings)
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="backend.email.worker")
    task = asyncio.create_task(worker.run(stop=stop))
    try:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(own_postgres.halt)
        await asyncio.sleep(2.0)  # many poll intervals: a try every 50 ms without backoff
        await asyncio.to_thread(own_postgres.resume)
        async with asyncio.timeout(15):
            while not any("reachable again" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await engine.dispose()
    lines = [r for r in caplog.records if r.name == "backend.email.worker"]
    messages = [r.getMessage() for r in lines if "started" not in r.getMessage()]
    assert len(messages) == 2, messages
    assert "database unavailable" in messages[0]
    assert "reachable again" in messages[1]
    assert all(r.exc_info is None for r in lines)


async def test_an_event_while_the_database_is_down_is_answered_retry_then_stored_once(
    own_postgres: PostgresServer, running: RunningServer
) -> None:
    from ..test_events import task_event

    headers = {
        **running.auth("taskflow", SCOPE_PUBLISH),
        "Content-Type": "application/cloudevents+json",
    }
    body = json.dumps(task_event("during-outage"))
    await asyncio.to_thread(own_postgres.halt)
    try:
        async with running.http.post(
            running.url + "/api/v1/events", data=body, headers=headers
        ) as resp:
            answer = await resp.json()
            assert resp.status == 503 and resp.headers["Retry-After"].isdigit()
            assert answer["status"] == "RETRY"
    finally:
        await asyncio.to_thread(own_postgres.resume)
    for _ in range(2):  # Dapr redelivers; the second delivery is a duplicate
        async with running.http.post(
            running.url + "/api/v1/events", data=body, headers=headers
        ) as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "SUCCESS"
    status, page = await running.request("GET", "/api/v1/notifications", sub="alice")
    assert [n["title"] for n in page["notifications"]] == ["New task: Write report"]
