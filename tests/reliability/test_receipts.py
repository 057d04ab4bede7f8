"""Delivery receipts: delivered_at is the first device's receipt; recovery and REST count too;
one notification's activity timeline lists its steps in order; held emails can wait on it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from backend import keys
from backend.models import utcnow

from ..conftest import SCOPE_ADMIN, RunningServer
from ..email_helpers import inbox, logs, mail_server, register, sessionmaker_of, worker_of

__all__ = ["inbox", "mail_server"]  # fixtures
ADMIN = {"sub": "ops", "scopes": (SCOPE_ADMIN,)}


async def one(server: RunningServer, user: str, notification_id: int) -> dict[str, Any]:
    status, body = await server.request("GET", f"/api/v1/notifications/{notification_id}", sub=user)
    assert status == 200, body
    return body


async def timeline(server: RunningServer, notification_id: int) -> list[dict[str, Any]]:
    path = f"/api/v1/admin/notifications/{notification_id}/activity"
    status, body = await server.request("GET", path, **ADMIN)
    assert status == 200, body
    return body["activity"]


async def pushed_written(server: RunningServer) -> None:
    """The `pushed` steps leave the delivery path through a queue: wait until it is drained."""
    push_log = server.app[keys.PUSH_LOG]
    async with asyncio.timeout(5):
        while len(push_log):
            await asyncio.sleep(0.02)
    await push_log.flush()


async def test_a_receipt_sets_delivered_at_once_and_unacknowledged_ones_stay_undelivered(
    server: RunningServer,
) -> None:
    phone = await server.connect("alice")
    laptop = await server.connect("alice")
    first, second = await server.publish(["alice"], title="one"), None
    [second] = await server.publish(["alice"], title="two")
    [first] = first
    assert first["delivered_at"] is None
    await phone.wait_for("notification", 2)
    await laptop.wait_for("notification", 2)
    assert [n["delivered_at"] for n in phone.of("notification")] == [None, None]

    ack = await phone.call("received", {"seqs": [first["seq"]]})
    assert ack == {"ok": True, "delivered": 1}
    delivered_at = (await one(server, "alice", first["id"]))["delivered_at"]
    assert delivered_at is not None
    assert (await one(server, "alice", second["id"]))["delivered_at"] is None  # not acknowledged

    # The second device's receipt does not move it.
    assert await laptop.call("received", {"seqs": [first["seq"]]}) == {"ok": True, "delivered": 0}
    assert (await one(server, "alice", first["id"]))["delivered_at"] == delivered_at
    status, page = await server.request("GET", "/api/v1/notifications", sub="alice")
    assert status == 200
    assert [n["delivered_at"] is not None for n in page["notifications"]] == [False, True]


async def test_recovery_and_sync_delivered_notifications_count_when_acknowledged(
    server: RunningServer,
) -> None:
    missed = [(await server.publish(["bob"], title=f"missed {n}"))[0] for n in range(3)]
    recovering = await server.connect("bob", auth={"token": server.token("bob"), "last_seq": 0})
    await recovering.wait_for("notification", 3)
    assert await recovering.call("received", {"seqs": [missed[0]["seq"], missed[1]["seq"]]}) == {
        "ok": True,
        "delivered": 2,
    }
    syncing = await server.connect("bob")
    answer = await syncing.call("sync", {"after_seq": 2})
    assert answer["ok"] and answer["count"] == 1
    await syncing.wait_for("notification", 1)
    assert await syncing.call("received", {"seqs": [missed[2]["seq"]]}) == {
        "ok": True,
        "delivered": 1,
    }
    for item in missed:
        assert (await one(server, "bob", item["id"]))["delivered_at"] is not None
    await pushed_written(server)
    vias = [
        s["detail"]["via"] for s in await timeline(server, missed[0]["id"]) if s["kind"] == "pushed"
    ]
    assert vias == ["recovery"]


async def test_an_sse_reader_acknowledges_over_rest(server: RunningServer) -> None:
    [item] = await server.publish(["carol"])
    status, body = await server.request(
        "POST", "/api/v1/notifications/received", sub="carol", json={"seqs": [item["seq"]]}
    )
    assert (status, body) == (200, {"delivered": [item["id"]]})
    status, body = await server.request(
        "POST", "/api/v1/notifications/received", sub="carol", json={"seqs": [item["seq"]]}
    )
    assert (status, body) == (200, {"delivered": []})
    assert (await one(server, "carol", item["id"]))["delivered_at"] is not None


async def test_the_timeline_lists_created_pushed_delivered_read_emailed_deleted_in_order(
    mail_server: RunningServer,
) -> None:
    server = mail_server
    await register(server, "dora", "dora@example.com")
    device = await server.connect("dora")
    [item] = await server.publish(["dora"], type="billing", title="Invoice")
    await device.wait_for("notification")
    await pushed_written(server)
    assert await device.call("received", {"seqs": [item["seq"]]}) == {"ok": True, "delivered": 1}
    assert (await device.call("mark_read", {"ids": [item["id"]]}))["ids"] == [item["id"]]
    assert await worker_of(server).drain() == 1
    status, _ = await server.request("DELETE", f"/api/v1/notifications/{item['id']}", sub="dora")
    assert status == 204

    steps = await timeline(server, item["id"])
    kinds = [s["kind"] for s in steps]
    assert kinds == ["created", "pushed", "delivered", "read", "emailed", "deleted"]
    assert steps[0]["detail"] == {"publisher": "publisher", "publisher_kind": "token"}
    assert steps[1]["detail"] == {"sessions": 1, "via": "live"}
    assert steps[2]["detail"] == {"via": "socket"}
    [email_log] = await logs(sessionmaker_of(server))
    assert steps[4]["detail"]["email_log_id"] == email_log.id
    assert [s["at"] for s in steps] == sorted(s["at"] for s in steps)
    assert {s["type"] for s in steps} == {"billing"} and {s["user_id"] for s in steps} == {"dora"}

    # The admin search: by user, type and kind, newest first, in keyset pages.
    [other] = await server.publish(["erin"], type="chat")
    await server.request("POST", f"/api/v1/notifications/{other['id']}/read", sub="erin")
    query = "/api/v1/admin/activity?user_id=dora&type=billing&limit=2"
    status, page = await server.request("GET", query, **ADMIN)
    assert status == 200 and [s["kind"] for s in page["activity"]] == ["deleted", "emailed"]
    status, page = await server.request("GET", f"{query}&cursor={page['next_cursor']}", **ADMIN)
    assert [s["kind"] for s in page["activity"]] == ["read", "delivered"]
    status, page = await server.request("GET", f"{query}&cursor={page['next_cursor']}", **ADMIN)
    assert [s["kind"] for s in page["activity"]] == ["pushed"] and page["next_cursor"] is None
    status, page = await server.request("GET", "/api/v1/admin/activity?kind=read", **ADMIN)
    assert {(s["user_id"], s["kind"]) for s in page["activity"]} == {
        ("dora", "read"),
        ("erin", "read"),
    }
    since = (utcnow() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    status, page = await server.request("GET", f"/api/v1/admin/activity?since={since}", **ADMIN)
    assert (status, page["activity"]) == (200, [])
    status, _ = await server.request("GET", "/api/v1/admin/activity", sub="dora")
    assert status == 403
    status, _ = await server.request(
        "GET", f"/api/v1/admin/notifications/{item['id']}/activity", sub="dora"
    )
    assert status == 403


async def test_a_held_email_can_wait_for_delivery_instead_of_reading(
    mail_server: RunningServer,
) -> None:
    server = mail_server
    await register(server, "fay", "fay@example.com")
    setting = {"email_if_unread_after": 10, "email_unless": "delivered"}
    status, _ = await server.request(
        "PUT", "/api/v1/preferences", sub="fay", json={"type_settings": {"alert": setting}}
    )
    assert status == 200
    [seen] = await server.publish(["fay"], type="alert", title="Seen on a device")
    [unseen] = await server.publish(["fay"], type="alert", title="Never reached a device")
    status, _ = await server.request(
        "POST", "/api/v1/notifications/received", sub="fay", json={"seqs": [seen["seq"]]}
    )
    assert status == 200
    worker, t0 = worker_of(server), utcnow()
    assert await worker.drain(now=t0 + timedelta(minutes=11)) == 2
    rows = {r.notification_id: r for r in await logs(sessionmaker_of(server))}
    assert rows[seen["id"]].status == "skipped"
    assert rows[seen["id"]].failed_reason == "delivered to a device before the email was due"
    assert rows[unseen["id"]].status == "sent"
    kinds = [s["kind"] for s in await timeline(server, seen["id"])]
    assert kinds == ["created", "delivered", "email_skipped"]


async def test_pushed_steps_past_activity_queue_max_are_dropped_and_counted(
    make_server: Any,
) -> None:
    server: RunningServer = await make_server(activity_queue_max=2)
    [item] = await server.publish(["gus"])
    push_log = server.app[keys.PUSH_LOG]
    dropped = push_log.dropped
    for _ in range(5):  # no await between: the writer cannot drain meanwhile
        push_log.pushed(item, "gus", 1, "live")
    assert len(push_log) == 2 and push_log.dropped == dropped + 3
    await pushed_written(server)
    assert [s["kind"] for s in await timeline(server, item["id"])] == [
        "created",
        "pushed",
        "pushed",
    ]


async def test_pushed_steps_of_a_burst_share_a_few_inserts(make_server: Any) -> None:
    server: RunningServer = await make_server(activity_flush_seconds=1.0)
    phone = await server.connect("hal")
    push_log = server.app[keys.PUSH_LOG]
    await pushed_written(server)
    written, batches = push_log.written, push_log.batches
    for number in range(8):  # bounded, and under OUTBOUND_RATE_PER_SECOND: all are pushed
        await server.publish(["hal"], title=f"n{number}")
    await phone.wait_for("notification", 8)
    await pushed_written(server)
    assert push_log.written - written == 8
    # One transaction per push without the wait (ACTIVITY_FLUSH_SECONDS); one or two with it.
    assert push_log.batches - batches <= 3, push_log.batches - batches
