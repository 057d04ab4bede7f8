"""Connections that idled through a PostgreSQL restart are replaced, so the first requests after
it (session reads, and publishes on asyncpg directly) succeed."""

from __future__ import annotations

import asyncio

from ..conftest import RunningServer
from ..servers import PostgresServer


async def test_reads_and_publishes_after_a_quiet_postgresql_restart_succeed_the_first_time(
    own_postgres: PostgresServer, server_on_own_postgres: RunningServer
) -> None:
    server = server_on_own_postgres
    [first] = await server.publish(["alice"], title="before")
    # Several pooled connections, all to the server about to restart.
    answers = await asyncio.gather(
        *(server.request("GET", "/api/v1/notifications", sub="alice") for _ in range(5))
    )
    assert [status for status, _ in answers] == [200] * 5
    await asyncio.to_thread(own_postgres.halt)
    await asyncio.to_thread(own_postgres.resume)
    await asyncio.sleep(1.1)
    answers = await asyncio.gather(
        *(server.request("GET", "/api/v1/notifications", sub="alice") for _ in range(5))
    )
    assert [status for status, _ in answers] == [200] * 5, answers
    [second] = await server.publish(["alice"], title="after")
    assert second["seq"] == first["seq"] + 1


async def test_a_publish_whose_connections_keep_breaking_is_unavailable_not_an_error(
    server_on_own_postgres: RunningServer,
) -> None:
    """asyncpg's "another operation is in progress" (a connection the server cut while shutting
    down) is retried once on another connection; if that one breaks too, the caller gets an
    unavailability (a 503 with Retry-After), never the driver's error (a 500)."""
    import asyncpg

    from backend import keys
    from backend.db import direct, is_unavailable

    server = server_on_own_postgres
    attempts = 0

    async def breaks(_connection: object) -> None:
        nonlocal attempts
        attempts += 1
        raise asyncpg.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        )

    try:
        await direct(server.app[keys.ENGINE], breaks)
    except Exception as exc:  # noqa: BLE001 - the class is what is checked
        caught: Exception = exc
    assert attempts == 2
    assert is_unavailable(caught), repr(caught)
    [stored] = await server.publish(["alice"], title="after")  # the pool is still good
    assert stored["seq"] == 1


async def test_connects_after_a_quiet_postgresql_restart_are_recorded_the_first_time(
    own_postgres: PostgresServer, server_on_own_postgres: RunningServer
) -> None:
    server = server_on_own_postgres
    # The users a connect records go on asyncpg outside a transaction (db.single, idempotent):
    # a pooled connection that died with the restart is replaced and the upsert runs again.
    first = await asyncio.gather(*(server.connect(f"u{i}") for i in range(5)))
    await asyncio.to_thread(own_postgres.halt)
    await asyncio.to_thread(own_postgres.resume)
    await asyncio.sleep(1.1)
    # New users, so each one is written (a user already recorded costs no statement).
    again = await asyncio.gather(*(server.connect(f"v{i}") for i in range(5)))
    assert all(recorder.client.connected for recorder in [*first, *again])
    [stored] = await server.publish(["v3"], title="after")
    assert stored["seq"] == 1
    await again[3].wait_for("notification")
