"""What the database sees of a connect storm: the users of a batch of connects are recorded by one
statement (PostgreSQL: on asyncpg, outside a transaction), and a user already recorded with the
same claims costs none."""

from __future__ import annotations

import asyncio

import pytest

from backend import keys

from ..conftest import RunningServer
from ..query_log import queries_per_checkout


async def test_connects_on_postgresql_record_their_users_in_one_statement_each_batch(
    server: RunningServer,
) -> None:
    engine = server.app[keys.ENGINE]
    if engine.dialect.name != "postgresql":
        pytest.skip("the direct statement is PostgreSQL's")
    with queries_per_checkout(engine) as checkouts:
        first = await asyncio.gather(*(server.connect(f"storm-{i}") for i in range(6)))
        for recorder in first:
            await recorder.client.disconnect()
        # The same users with the same claims again: nothing to write.
        again = await asyncio.gather(*(server.connect(f"storm-{i}") for i in range(6)))
    assert all(recorder.client.connected for recorder in again)
    # The checkouts that touched users (the email worker and retention loops check out too).
    batches = [queries for queries in checkouts if any("users" in q for q in queries)]
    assert 1 <= len(batches) <= 6, batches  # the second round wrote nothing
    for queries in batches:
        assert len(queries) == 1, queries  # no BEGIN, no COMMIT, no ping
        assert "INSERT INTO users" in queries[0]
    async with engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        assert raw is not None
        count = await raw.fetchval("SELECT count(*) FROM users WHERE id LIKE 'storm-%'")
    assert count == 6
