"""Socket.IO: authenticated connects, persist-then-broadcast, and nothing crosses users."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import socketio
from sqlalchemy import select

from backend import keys
from backend.models import Notification

from .conftest import Recorder, RunningServer
from .test_api_notifications import NOTIFICATION_KEYS, publish


async def test_a_client_receives_a_notification_created_over_rest_with_its_stored_id(
    server: RunningServer,
) -> None:
    alice = await server.connect("alice")
    [created] = await server.publish(["alice"], title="Hi Alice", data={"k": 1})
    [pushed] = await alice.wait_for("notification")
    assert pushed == created
    assert set(pushed) == NOTIFICATION_KEYS
    [count] = await alice.wait_for("unread_count")
    assert count == {"count": 1}


async def test_the_row_is_committed_before_the_client_sees_it(server: RunningServer) -> None:
    alice = await server.connect("alice")
    seen_in_db: list[bool] = []
    sessionmaker = server.app[keys.SESSIONMAKER]

    @alice.client.on("notification")
    async def check(data: dict[str, Any]) -> None:
        async with sessionmaker() as session:
            row = await session.get(Notification, data["id"])
            seen_in_db.append(row is not None and row.seq == data["seq"])

    await server.publish(["alice"])
    async with asyncio.timeout(5):
        while not seen_in_db:
            await asyncio.sleep(0.01)
    assert seen_in_db == [True]


async def test_user_b_never_receives_user_as_notification(server: RunningServer) -> None:
    alice = await server.connect("alice")
    bob = await server.connect("bob")
    await server.publish(["alice"])
    await alice.wait_for("notification")
    await server.publish(["bob"], title="for bob")
    await bob.wait_for("notification")
    assert [n["title"] for n in bob.of("notification")] == ["for bob"]
    assert len(alice.of("notification")) == 1


async def test_every_session_of_a_user_receives_it(server: RunningServer) -> None:
    tabs = [await server.connect("alice") for _ in range(3)]
    await server.publish(["alice"])
    for tab in tabs:
        await tab.wait_for("notification")


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        (None, "missing token"),
        ({"token": "garbage"}, "invalid token: malformed"),
        ("expired", "token expired"),
    ],
)
async def test_a_bad_token_is_refused_at_connect_with_its_reason(
    server: RunningServer, auth: Any, reason: str
) -> None:
    if auth == "expired":
        auth = {"token": server.token("alice", ttl_seconds=-60)}
    recorder = Recorder()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await recorder.client.connect(
            server.url, auth=auth or {}, transports=["websocket"], wait_timeout=5
        )
    assert recorder.connect_errors == [{"message": reason}]


async def test_a_bearer_header_authenticates_over_long_polling(server: RunningServer) -> None:
    recorder = Recorder()
    server.clients.append(recorder.client)
    await recorder.client.connect(
        server.url, headers=server.auth("carol"), transports=["polling"], wait_timeout=5
    )
    await server.publish(["carol"])
    await recorder.wait_for("notification")


async def test_an_idempotent_retry_yields_one_row_and_one_delivery(server: RunningServer) -> None:
    alice = await server.connect("alice")
    body = {"user_ids": ["alice"], "type": "t", "title": "once"}
    for _ in range(3):
        status, _ = await publish(server, body, headers={"Idempotency-Key": "k-1"})
        assert status == 201
    await alice.wait_for("notification")
    await asyncio.sleep(0.3)
    assert len(alice.of("notification")) == 1
    async with server.app[keys.SESSIONMAKER]() as session:
        rows = (await session.scalars(select(Notification))).all()
    assert len(rows) == 1


async def test_in_app_off_is_not_pushed(server: RunningServer) -> None:
    alice = await server.connect("alice")
    await server.request(
        "PUT",
        "/api/v1/preferences",
        sub="alice",
        json={"type_settings": {"quiet": {"in_app": False}}},
    )
    await server.publish(["alice"], type="quiet")
    await server.publish(["alice"], type="loud")
    [pushed] = await alice.wait_for("notification")
    await asyncio.sleep(0.2)
    assert pushed["type"] == "loud" and len(alice.of("notification")) == 1


async def test_read_state_changes_reach_every_session(server: RunningServer) -> None:
    phone = await server.connect("alice")
    laptop = await server.connect("alice")
    [created] = await server.publish(["alice"])
    await server.request("POST", f"/api/v1/notifications/{created['id']}/read", sub="alice")
    for device in (phone, laptop):
        [read] = await device.wait_for("notifications_read")
        assert read == {"ids": [created["id"]]}
        counts = await device.wait_for("unread_count", 2)
        assert counts[-1] == {"count": 0}


async def test_websocket_compression_is_off_unless_configured(make_server: Any) -> None:
    path = "/socket.io/?EIO=4&transport=websocket"
    for enabled, expected in ((False, 0), (True, 15)):
        server = await make_server(websocket_compression=enabled)
        async with server.http.ws_connect(server.url + path, compress=15) as ws:
            opening = await ws.receive_str()
            assert opening.startswith("0{")
            assert ws.compress == expected


async def test_fan_out_writes_directly_to_idle_websockets_and_keeps_seq_order(
    server: RunningServer,
) -> None:
    clients = [await server.connect(f"fan{i}") for i in range(5)]
    polling = await server.connect("fan0", transports=["polling"])
    control = server.app[keys.DELIVERY]
    before = control.direct_writes
    for title in ("one", "two", "three"):
        await server.publish([f"fan{i}" for i in range(5)], title=title)
    for recorder in [*clients, polling]:
        got = await recorder.wait_for("notification", 3)
        assert [n["title"] for n in got] == ["one", "two", "three"]
        assert [n["seq"] for n in got] == [1, 2, 3]
        counts = await recorder.wait_for("unread_count", 3)
        assert [c["count"] for c in counts] == [1, 2, 3]
    # The websocket sessions took the direct way (one write per publish each); the polling
    # session, which has no websocket, took Engine.IO's queue and still got everything in order.
    assert control.direct_writes - before >= 5 * 3


async def test_a_frame_never_overtakes_a_packet_already_queued_for_the_session(
    server: RunningServer,
) -> None:
    alice = await server.connect("alice")
    sio = server.app[keys.SIO]
    [sid] = [c.sid for c in server.app[keys.CONNECTIONS].user_sessions("alice")]
    for round_ in range(8):  # within the outbound burst (10), so none is coalesced
        # The first goes through Engine.IO's queue (an emit with an ack callback always does);
        # the second is sent at once after it, while the queue's writer has not run yet.
        await sio.emit("first", {"round": round_}, to=sid, callback=lambda *_: None)
        await server.app[keys.NOTIFIER].emit_to_users(
            [("alice", [("notification", {"seq": round_, "title": "second"})])]
        )
    await alice.wait_for("notification", 8)
    order = [name for name, _ in alice.events if name in ("first", "notification")]
    assert order == ["first", "notification"] * 8


async def test_a_disconnect_leaves_no_trace_in_the_room_tables(server: RunningServer) -> None:
    alice = await server.connect("alice", auth={"token": server.token("alice", topics=("news",))})
    manager = server.app[keys.SIO].manager
    [sid] = [c.sid for c in server.app[keys.CONNECTIONS].user_sessions("alice")]
    assert (await alice.call("join", {"room": "topic:news"}))["ok"] is True
    assert sorted(manager.get_rooms(sid, "/")) == sorted([sid, "user:alice", "topic:news"])
    await alice.client.disconnect()
    async with asyncio.timeout(5):
        while server.app[keys.CONNECTIONS].user_sessions("alice"):
            await asyncio.sleep(0.01)
    rooms = manager.rooms.get("/", {})
    assert all(sid not in members for members in rooms.values())
    assert "user:alice" not in rooms and "topic:news" not in rooms
    assert ("/", sid) not in manager._session_rooms
