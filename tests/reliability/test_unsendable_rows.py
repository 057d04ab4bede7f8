"""A stored notification whose `data` cannot be sent (stored before MAX_JSON_DEPTH, or by hand)
never wedges its user: recovery, `sync` and REST send it with `data: {}`, log one line, go on."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import JSON, String, bindparam, cast, insert, update

from backend import keys
from backend.codec import SENDABLE_DEPTH
from backend.models import Notification, User, utcnow

from ..conftest import RunningServer


def nested(depth: int) -> str:
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


async def store_raw(server: RunningServer, user_id: str, data_text: str) -> int:
    """Insert a notification with `data_text` as its stored JSON, past every edge check."""
    sessionmaker = server.app[keys.SESSIONMAKER]
    raw = bindparam("raw", data_text, type_=String)
    async with sessionmaker.begin() as session:
        seq = await session.scalar(
            update(User)
            .where(User.id == user_id)
            .values(last_seq=User.last_seq + 1, unread_count=User.unread_count + 1)
            .returning(User.last_seq)
        )
        now = utcnow()
        dialect = (await session.connection()).dialect.name
        notification_id = await session.scalar(
            insert(Notification)
            .values(
                user_id=user_id,
                seq=seq,
                type="test",
                title="poisoned",
                body="",
                data=cast(raw, JSON) if dialect == "postgresql" else raw,
                in_app=True,
                read=False,
                created_at=now,
                updated_at=now,
            )
            .returning(Notification.id)
        )
    assert notification_id is not None
    return notification_id


@pytest.mark.parametrize("depth", [SENDABLE_DEPTH + 1, 900, 2_000])
async def test_a_stored_notification_that_cannot_be_sent_does_not_stop_recovery(
    server: RunningServer, depth: int, caplog: pytest.LogCaptureFixture
) -> None:
    await server.publish(["alice"], title="before")
    poisoned = await store_raw(server, "alice", nested(depth))
    await server.publish(["alice"], title="after")
    caplog.set_level(logging.WARNING)

    alice = await server.connect("alice", auth={"token": server.token("alice"), "last_seq": 0})
    [result] = await alice.wait_for("recovery")
    assert result == {"recovered": True, "count": 3, "last_seq": 3}
    received = alice.of("notification")
    assert [(n["seq"], n["title"]) for n in received] == [
        (1, "before"),
        (2, "poisoned"),
        (3, "after"),
    ]
    assert received[1]["id"] == poisoned and received[1]["data"] == {}
    skipped = [r for r in caplog.records if f"notification {poisoned}" in r.getMessage()]
    assert len(skipped) == 1 and "\n" not in skipped[0].getMessage()

    answer = await alice.call("sync", {"after_seq": 0})
    assert answer == {"ok": True, "recovered": True, "count": 3, "last_seq": 3}
    await alice.wait_for("notification", 6)

    # Live delivery goes on after it.
    await server.publish(["alice"], title="live")
    live = await alice.wait_for("notification", 7)
    assert live[-1]["seq"] == 4


async def test_a_stored_notification_that_cannot_be_sent_is_listed_over_rest(
    server: RunningServer,
) -> None:
    await server.publish(["alice"], title="before")
    poisoned = await store_raw(server, "alice", nested(900))
    status, body = await server.request("GET", "/api/v1/notifications", sub="alice")
    assert status == 200, body
    assert [(n["id"], n["data"]) for n in body["notifications"]][0] == (poisoned, {})
    status, item = await server.request("GET", f"/api/v1/notifications/{poisoned}", sub="alice")
    assert status == 200, item
    assert item["title"] == "poisoned" and item["data"] == {}
    status, _ = await server.request("POST", f"/api/v1/notifications/{poisoned}/read", sub="alice")
    assert status == 204
