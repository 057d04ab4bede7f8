"""The real-time layer against a real server with several python-socketio clients."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import socketio

from backend.security import SCOPE_ADMIN, SCOPE_PUBLISH

from .conftest import Recorder, RunningServer

MakeServer = Callable[..., Awaitable[RunningServer]]


async def test_every_event_is_answered_through_its_ack(server: RunningServer) -> None:
    alice = await server.connect("alice")
    beat = await alice.call("heartbeat")
    assert beat["ok"] is True and beat["server_time"].endswith("Z")
    assert await alice.call("nonsense", {}) == {
        "ok": False,
        "error": {"code": "unknown_event", "message": "unknown event 'nonsense'"},
    }
    bad = await alice.call("mark_read", {"ids": "all"})
    assert bad["ok"] is False and bad["error"]["code"] == "invalid_payload"
    bad = await alice.call("sync", [1, 2])
    assert bad["error"]["code"] == "validation_error"
    huge = await alice.call("message", {"data": "x" * 70_000})
    assert huge["ok"] is False and huge["error"]["code"] == "payload_too_large"
    assert await alice.call("message", {"data": {"hi": 1}}) == {"ok": True, "echo": {"hi": 1}}
    assert alice.client.connected


async def test_marking_read_on_one_device_syncs_every_device(server: RunningServer) -> None:
    phone = await server.connect("alice")
    laptop = await server.connect("alice")
    created = await server.publish(["alice"])
    created += await server.publish(["alice"])
    await laptop.wait_for("notification", 2)
    answer = await phone.call("mark_read", {"ids": [created[0]["id"]]})
    assert answer == {"ok": True, "ids": [created[0]["id"]]}
    for device in (phone, laptop):
        [read] = await device.wait_for("notifications_read")
        assert read == {"ids": [created[0]["id"]]}
        async with asyncio.timeout(5):
            while device.of("unread_count")[-1] != {"count": 1}:
                await asyncio.sleep(0.02)
    assert await laptop.call("mark_all_read") == {"ok": True, "count": 1}
    await phone.wait_for("notifications_read", 2)
    assert phone.of("notifications_read")[-1] == {"ids": [created[1]["id"]]}
    status, count = await server.request("GET", "/api/v1/notifications/unread-count", sub="alice")
    assert count == {"count": 0}


async def test_rooms_public_private_and_other_users(make_server: MakeServer) -> None:
    server = await make_server(public_topics=("releases",))
    alice = await server.connect("alice", auth={"token": server.token("alice", topics=("ops",))})
    assert await alice.call("join", {"room": "topic:releases"}) == {
        "ok": True,
        "room": "topic:releases",
    }
    assert (await alice.call("join", {"room": "topic:ops"}))["ok"] is True
    refused = await alice.call("join", {"room": "topic:finance"})
    assert refused["error"]["code"] == "forbidden"
    refused = await alice.call("join", {"room": "user:bob"})
    assert refused == {
        "ok": False,
        "error": {"code": "forbidden", "message": "you cannot join another user's room"},
    }
    assert (await alice.call("join", {"room": "lobby"}))["error"]["code"] == "validation_error"
    bob = await server.connect("bob")
    assert (await bob.call("join", {"room": "topic:ops"}))["error"]["code"] == "forbidden"
    assert (await bob.call("join", {"room": "topic:releases"}))["ok"] is True
    assert await alice.call("message", {"room": "topic:releases", "data": "typing"}) == {"ok": True}
    [relayed] = await bob.wait_for("message")
    assert relayed == {"room": "topic:releases", "from": "alice", "data": "typing"}
    assert (await alice.call("leave", {"room": "topic:releases"}))["ok"] is True
    left = await alice.call("message", {"room": "topic:releases", "data": "x"})
    assert left["ok"] is False


async def test_topic_publish_reaches_subscribers_only_one_stored_each(
    make_server: MakeServer,
) -> None:
    server = await make_server(public_topics=("releases",))
    for user in ("alice", "bob"):
        status, _ = await server.request("PUT", "/api/v1/topics/releases/subscription", sub=user)
        assert status == 204
    status, body = await server.request("PUT", "/api/v1/topics/secret/subscription", sub="carol")
    assert status == 403
    assert await server.request("GET", "/api/v1/topics/subscriptions", sub="alice") == (
        200,
        {"topics": ["releases"]},
    )
    clients = {user: await server.connect(user) for user in ("alice", "bob", "carol")}
    status, body = await server.request(
        "POST", "/api/v1/notifications", sub="svc", scopes=(SCOPE_PUBLISH,),
        json={"topic": "releases", "type": "release", "title": "v2 is out"},
    )  # fmt: skip
    assert status == 201 and len(body["notifications"]) == 2
    for user in ("alice", "bob"):
        [got] = await clients[user].wait_for("notification")
        assert got["title"] == "v2 is out" and got["seq"] == 1
    await asyncio.sleep(0.2)
    assert clients["carol"].of("notification") == []
    status, _ = await server.request("DELETE", "/api/v1/topics/releases/subscription", sub="bob")
    assert status == 204
    status, body = await server.request(
        "POST", "/api/v1/notifications", sub="svc", scopes=(SCOPE_PUBLISH,),
        json={"topic": "releases", "type": "release", "title": "v3"},
    )  # fmt: skip
    assert [n["seq"] for n in body["notifications"]] == [2]


async def test_inbound_flood_gets_error_acks_then_a_disconnect(make_server: MakeServer) -> None:
    server = await make_server(event_rate_per_second=1.0, event_burst=5)
    alice = await server.connect("alice")
    answers = [await alice.call("heartbeat") for _ in range(5)]
    assert all(answer["ok"] for answer in answers)
    limited = await alice.call("heartbeat")
    assert limited == {
        "ok": False,
        "error": {"code": "rate_limited", "message": "too many events; slow down"},
    }
    for _ in range(4):
        await alice.client.emit("heartbeat")
    async with asyncio.timeout(5):
        while alice.client.connected:
            await asyncio.sleep(0.05)


async def test_outbound_excess_is_coalesced_into_an_unread_count(make_server: MakeServer) -> None:
    server = await make_server(outbound_rate_per_second=3.0)
    alice = await server.connect("alice")
    for _ in range(6):
        await server.publish(["alice"])
    await alice.wait_for("notification", 3)
    counts = await alice.wait_for("unread_count", 7)
    coalesced = [c for c in counts if "missed" in c]
    assert coalesced == [{"count": 6, "missed": 3}]
    assert len(alice.of("notification")) == 3
    answer = await alice.call("sync", {"after_seq": 3})
    assert answer == {"ok": True, "recovered": True, "count": 3, "last_seq": 6}
    assert [n["seq"] for n in alice.of("notification")] == [1, 2, 3, 4, 5, 6]


async def test_over_the_per_user_limit_the_oldest_session_is_dropped(
    make_server: MakeServer,
) -> None:
    server = await make_server(max_connections_per_user=2)
    first = await server.connect("alice")
    await asyncio.sleep(0.05)
    second = await server.connect("alice")
    third = await server.connect("alice")
    [closed] = await first.wait_for("session_closed")
    assert "oldest session" in closed["reason"]
    async with asyncio.timeout(5):
        while first.client.connected:
            await asyncio.sleep(0.05)
    assert second.client.connected and third.client.connected
    _, status = await server.request("GET", "/api/v1/notifications/websocket/status", sub="alice")
    assert status["connections"] == 2


async def test_a_reconnect_storm_is_refused_with_when_to_retry(make_server: MakeServer) -> None:
    server = await make_server(connects_per_second=2)
    await server.connect("a")
    await server.connect("b")
    late = Recorder()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await late.client.connect(
            server.url, auth={"token": server.token("c")}, transports=["websocket"], wait_timeout=5
        )
    [refusal] = late.connect_errors
    assert refusal["message"].startswith("server busy, retry in ")
    assert 0 < refusal["data"]["retry_after"] <= 1
    await asyncio.sleep(refusal["data"]["retry_after"] + 0.05)
    await server.connect("c")


async def test_stale_sessions_are_really_disconnected_by_admin_cleanup(
    server: RunningServer,
) -> None:
    quiet = await server.connect("alice")
    admin = ("admin", (SCOPE_ADMIN,))
    status, body = await server.request(
        "POST", "/api/v1/notifications/websocket/cleanup?timeout_seconds=300", sub="x"
    )
    assert status == 403
    status, body = await server.request(
        "POST", "/api/v1/notifications/websocket/cleanup?timeout_seconds=300",
        sub=admin[0], scopes=admin[1],
    )  # fmt: skip
    assert body == {"cleaned": 0, "sids": []}
    await asyncio.sleep(0.3)
    status, body = await server.request(
        "POST", "/api/v1/notifications/websocket/cleanup?timeout_seconds=0.1",
        sub=admin[0], scopes=admin[1],
    )  # fmt: skip
    assert status == 200 and body["cleaned"] == 1 and body["sids"] == [quiet.client.get_sid()]
    async with asyncio.timeout(5):
        while quiet.client.connected:
            await asyncio.sleep(0.05)
    status, body = await server.request(
        "POST", "/api/v1/notifications/websocket/cleanup?timeout_seconds=-1",
        sub=admin[0], scopes=admin[1],
    )  # fmt: skip
    assert status == 422


async def test_status_and_stats_endpoints(server: RunningServer) -> None:
    await server.connect("alice")
    bob = await server.connect("bob")
    await bob.call("heartbeat")
    status, mine = await server.request(
        "GET", "/api/v1/notifications/websocket/status", sub="alice"
    )
    assert status == 200
    assert mine["online"] is True and mine["connections"] == 1
    assert mine["sessions"][0]["rooms"] == ["user:alice"]
    assert mine["sessions"][0]["transport"] == "websocket"
    status, _ = await server.request("GET", "/api/v1/notifications/websocket/stats", sub="alice")
    assert status == 403
    status, stats = await server.request(
        "GET", "/api/v1/notifications/websocket/stats", sub="root", scopes=(SCOPE_ADMIN,)
    )
    assert status == 200
    assert stats["connections"] == 2 and stats["online_users"] == 2
    assert stats["rooms"] == {"user:alice": 1, "user:bob": 1}
    assert stats["transports"] == {"websocket": 2}
    assert stats["events_in"] >= 1 and stats["uptime_seconds"] >= 0
    assert len(stats["processes"]) == 1


async def test_shutdown_disconnects_clients_at_once(make_server: MakeServer) -> None:
    # Production ping settings: a shutdown that left sockets open would take 45 s.
    server = await make_server(ping_interval_seconds=25, ping_timeout_seconds=20)
    alice = await server.connect("alice")
    reasons: list[Any] = []
    alice.client.on("disconnect", lambda reason=None: reasons.append(reason))
    stopping = asyncio.create_task(server.stop())
    async with asyncio.timeout(3):
        while alice.client.connected:
            await asyncio.sleep(0.05)
    # The python-socketio client does not close its websocket by itself: the server cuts it
    # after a one-second grace instead of waiting (it used to take 5 s).
    async with asyncio.timeout(3):
        await stopping
    assert reasons
