"""PostgreSQL going away under a running server: a clear 503 while it is down, nothing lost, and
publishing works again as soon as it is back, without restarting our server."""

from __future__ import annotations

import asyncio

from .conftest import RunningServer
from .servers import PostgresServer


async def test_a_postgresql_restart_loses_nothing_and_needs_no_server_restart(
    own_postgres: PostgresServer, server_on_own_postgres: RunningServer
) -> None:
    server = server_on_own_postgres
    alice = await server.connect("alice")
    [first] = await server.publish(["alice"], title="before")

    await asyncio.to_thread(own_postgres.halt)
    body = {"user_ids": ["alice"], "type": "test", "title": "while down"}
    status, answer = await server.request(
        "POST", "/api/v1/notifications", sub="publisher", scopes=("notifications:publish",),
        json=body,
    )  # fmt: skip
    assert status == 503, answer
    assert answer["error"]["code"] == "unavailable"
    status, health = await server.request("GET", "/health/ready")
    assert status == 503

    await asyncio.to_thread(own_postgres.resume)
    # Every pooled connection died with the old server; the first publish after it is back
    # must not see that.
    [second] = await server.publish(["alice"], title="after")
    assert second["seq"] == first["seq"] + 1
    pushed = await alice.wait_for("notification", 2)
    assert [n["title"] for n in pushed] == ["before", "after"]

    # A restart with no request in between: the pool still holds connections to the old
    # server, and the next publish must not fail on one of them.
    await asyncio.to_thread(own_postgres.halt)
    await asyncio.to_thread(own_postgres.resume)
    [third] = await server.publish(["alice"], title="after a quiet restart")
    assert third["seq"] == second["seq"] + 1
    await alice.wait_for("notification", 3)

    status, page = await server.request("GET", "/api/v1/notifications", sub="alice")
    assert status == 200
    titles = [n["title"] for n in page["notifications"]]
    assert titles == ["after a quiet restart", "after", "before"]
