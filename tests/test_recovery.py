"""Durable recovery by last seq: from the database, across restarts, no gap, no duplicate."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from .conftest import Recorder, RunningServer, refused_connect

MakeServer = Callable[..., Awaitable[RunningServer]]


def seqs(recorder: Recorder) -> list[int]:
    return [n["seq"] for n in recorder.of("notification")]


async def test_reconnecting_with_last_seq_delivers_what_was_missed_oldest_first(
    server: RunningServer,
) -> None:
    first = await server.connect("alice")
    await server.publish(["alice"])
    await first.wait_for("notification")
    await first.client.disconnect()
    for i in range(5):
        await server.publish(["alice"], title=f"missed {i}")
    again = await server.connect("alice", auth={"token": server.token("alice"), "last_seq": 1})
    [result] = await again.wait_for("recovery")
    assert result == {"recovered": True, "count": 5, "last_seq": 6}
    assert seqs(again) == [2, 3, 4, 5, 6]
    assert [n["title"] for n in again.of("notification")] == [f"missed {i}" for i in range(5)]
    await server.publish(["alice"])
    await again.wait_for("notification", 6)
    assert seqs(again) == [2, 3, 4, 5, 6, 7]


async def test_recovery_survives_a_server_restart(make_server: MakeServer) -> None:
    server = await make_server()
    before = await server.connect("alice")
    await server.publish(["alice"])
    [seen] = await before.wait_for("notification")
    await server.stop()
    await server.start()
    for _ in range(3):
        await server.publish(["alice"])
    await server.stop()
    await server.start()
    after = await server.connect(
        "alice", auth={"token": server.token("alice"), "last_seq": seen["seq"]}
    )
    [result] = await after.wait_for("recovery")
    assert result == {"recovered": True, "count": 3, "last_seq": 4}
    assert seqs(after) == [2, 3, 4]


async def test_notifications_created_during_recovery_arrive_once_in_order(
    make_server: MakeServer,
) -> None:
    server = await make_server(recovery_page_size=1)
    for _ in range(30):
        await server.publish(["alice"])

    async def publish_during() -> None:
        for _ in range(20):
            await server.publish(["alice"])

    publisher = asyncio.create_task(publish_during())
    await asyncio.sleep(0)
    client = await server.connect("alice", auth={"token": server.token("alice"), "last_seq": 0})
    await publisher
    await client.wait_for("notification", 50, timeout=20)
    await client.wait_for("recovery")
    await asyncio.sleep(0.2)
    assert seqs(client) == list(range(1, 51))


async def test_sync_returns_the_missed_ones_through_events_and_its_ack(
    server: RunningServer,
) -> None:
    for _ in range(4):
        await server.publish(["alice"])
    client = await server.connect("alice")
    answer = await client.call("sync", {"after_seq": 2})
    assert answer == {"ok": True, "recovered": True, "count": 2, "last_seq": 4}
    assert seqs(client) == [3, 4]
    assert await client.call("sync", {"after_seq": 4}) == {
        "ok": True,
        "recovered": True,
        "count": 0,
        "last_seq": 4,
    }


async def test_too_far_behind_is_told_recovered_false(make_server: MakeServer) -> None:
    server = await make_server(recovery_max_notifications=3)
    for _ in range(5):
        await server.publish(["alice"])
    client = await server.connect("alice", auth={"token": server.token("alice"), "last_seq": 0})
    [result] = await client.wait_for("recovery")
    assert result == {"recovered": False, "count": 0, "last_seq": 5}
    assert client.of("notification") == []
    ahead = await server.connect("alice", auth={"token": server.token("alice"), "last_seq": 99})
    [result] = await ahead.wait_for("recovery")
    assert result["recovered"] is False


async def test_the_limit_counts_only_what_the_client_would_see(make_server: MakeServer) -> None:
    # Five seqs taken since 0, more than the limit of 3; two of them deleted: 3 to send.
    server = await make_server(recovery_max_notifications=3)
    created = [(await server.publish(["alice"]))[0] for _ in range(5)]
    for gone in created[:2]:
        await server.request("DELETE", f"/api/v1/notifications/{gone['id']}", sub="alice")
    client = await server.connect("alice", auth={"token": server.token("alice"), "last_seq": 0})
    [result] = await client.wait_for("recovery")
    assert result == {"recovered": True, "count": 3, "last_seq": 5}
    assert seqs(client) == [3, 4, 5]


async def test_deleted_and_muted_notifications_are_not_recovered(server: RunningServer) -> None:
    [gone] = await server.publish(["alice"])
    await server.publish(["alice"])
    await server.request("DELETE", f"/api/v1/notifications/{gone['id']}", sub="alice")
    client = await server.connect("alice", auth={"token": server.token("alice"), "last_seq": 0})
    [result] = await client.wait_for("recovery")
    assert result["count"] == 1 and seqs(client) == [2]


@pytest.mark.parametrize("last_seq", [-1, "7", 1.5, True])
async def test_a_bad_last_seq_is_refused_at_connect(
    server: RunningServer, last_seq: object
) -> None:
    auth = {"token": server.token("alice"), "last_seq": last_seq}
    assert await refused_connect(server, auth) == [
        {"message": "invalid last_seq: expected an integer from 0 to 9223372036854775807"}
    ]
