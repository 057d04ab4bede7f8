"""Connections that idled through a PostgreSQL restart are replaced, so the first requests after
it (session reads, and publishes on asyncpg directly) succeed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..conftest import RunningServer, create_pg_database, make_settings
from ..servers import PostgresServer


async def test_reads_and_publishes_after_a_quiet_postgresql_restart_succeed_the_first_time(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    database_url = await create_pg_database(own_postgres)
    server = RunningServer(make_settings(database_url, tmp_path))
    await server.start()
    try:
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
    finally:
        await server.close()
