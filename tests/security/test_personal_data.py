"""Export and erase (issue 15 items 5 and 6): everything stored about a user, handed over as one
streamed JSON document in bounded memory, or erased from every table, sockets closed."""

from __future__ import annotations

import asyncio
import json
import logging
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from backend import keys
from backend.models import Base, EmailLog, Notification, User, utcnow
from backend.services.personal_data import PERSONAL_DATA

from ..conftest import SCOPE_ADMIN, SCOPE_PUBLISH, RunningServer
from ..servers import RedisServer

MakeServer = Any


async def _populate(server: RunningServer, user_id: str) -> list[int]:
    """One record of every kind: notifications (read, deleted, unread), preferences, a topic
    subscription, email logs (one sent, one still queued)."""
    ids = [(await server.publish([user_id]))[0]["id"] for _ in range(3)]
    await server.request("POST", f"/api/v1/notifications/{ids[0]}/read", sub=user_id)
    await server.request("DELETE", f"/api/v1/notifications/{ids[1]}", sub=user_id)
    status, _ = await server.request(
        "PUT", "/api/v1/preferences", sub=user_id, json={"digest_frequency": "daily"}
    )
    assert status == 200
    token = server.token(user_id, topics=["news"])
    status, _ = await server.request(
        "PUT", "/api/v1/topics/news/subscription", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 204
    async with server.app[keys.SESSIONMAKER].begin() as session:
        await session.execute(
            insert(EmailLog),
            [
                {"user_id": user_id, "notification_id": ids[2], "subject": "s", "status": s}
                for s in ("sent", "queued")
            ],
        )
    return ids


async def _export(server: RunningServer, user_id: str) -> tuple[int, Any]:
    return await server.request("GET", "/api/v1/me/export", sub=user_id)


async def test_export_holds_every_kind_of_record_of_the_caller_only(server: RunningServer) -> None:
    ids = await _populate(server, "exp")
    await _populate(server, "someone-else")
    status, doc = await _export(server, "exp")
    assert status == 200
    assert set(doc) == {"exported_at", "user_id"} | {entry.name for entry in PERSONAL_DATA}
    assert doc["user_id"] == "exp" and doc["user"]["id"] == "exp"
    assert doc["preferences"]["digest_frequency"] == "daily"
    assert [s["topic"] for s in doc["subscriptions"]] == ["news"]
    by_id = {n["id"]: n for n in doc["notifications"]}
    assert sorted(by_id) == ids  # the deleted one too: it is still stored
    assert by_id[ids[0]]["read"] is True and by_id[ids[0]]["read_at"].endswith("Z")
    assert by_id[ids[1]]["deleted_at"] is not None and by_id[ids[2]]["read_at"] is None
    assert sorted(e["status"] for e in doc["email_logs"]) == ["queued", "sent"]
    for kind in ("notifications", "email_logs", "subscriptions"):
        assert {row["user_id"] for row in doc[kind]} == {"exp"}


async def test_export_of_an_unknown_user_is_an_empty_document(server: RunningServer) -> None:
    status, doc = await _export(server, "nobody")
    assert status == 200
    assert doc["user"] is None and doc["preferences"] is None
    assert doc["notifications"] == doc["email_logs"] == doc["subscriptions"] == []
    assert (await server.request("GET", "/api/v1/me/export"))[0] == 401


async def test_export_is_rate_limited_per_user(make_server: MakeServer) -> None:
    server = await make_server(exports_per_hour=2)
    assert [(await _export(server, "greedy"))[0] for _ in range(2)] == [200, 200]
    async with server.http.get(
        server.url + "/api/v1/me/export", headers=server.auth("greedy")
    ) as resp:
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["error"]["code"] == "too_many_requests"
    assert (await _export(server, "patient"))[0] == 200  # another user's bucket


ROWS = 100_000


async def _insert_many(server: RunningServer, user_id: str, count: int) -> None:
    """Rows straight into the tables (the publish path would take minutes for 100k)."""
    now = utcnow()
    async with server.app[keys.SESSIONMAKER].begin() as session:
        await session.execute(insert(User).values(id=user_id, last_seq=count))
        for start in range(0, count, 10_000):
            await session.execute(
                insert(Notification),
                [
                    {
                        "user_id": user_id,
                        "seq": seq,
                        "type": "bulk",
                        "title": f"title {seq}",
                        "body": "a body of some length " * 4,
                        "data": {"n": seq},
                        "created_at": now,
                        "updated_at": now,
                    }  # fmt: skip
                    for seq in range(start + 1, min(start + 10_000, count) + 1)
                ],
            )


async def test_export_of_100k_notifications_streams_in_bounded_memory(
    server: RunningServer, tmp_path: Path
) -> None:
    await _insert_many(server, "big", ROWS)
    target = tmp_path / "export.json"
    size = 0
    tracemalloc.start()
    try:
        async with server.http.get(
            server.url + "/api/v1/me/export", headers=server.auth("big")
        ) as resp:
            assert resp.status == 200
            with target.open("wb") as out:
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    out.write(chunk)
                    size += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size > 20_000_000  # the document is large ...
    # ... and never all in memory at once: the rows as Python objects would be several times
    # the document; streamed, the peak is about one page and the buffers (~10 MB of 39 here).
    assert peak < size / 2, (peak, size)
    doc = json.loads(target.read_bytes())
    assert len(doc["notifications"]) == ROWS
    assert [n["seq"] for n in doc["notifications"][:3]] == [1, 2, 3]


def _user_tables() -> list[Any]:
    return [table for table in Base.metadata.sorted_tables if "user_id" in table.c]


def test_the_registry_names_every_table_with_a_user_id_column() -> None:
    registered = {entry.table.name for entry in PERSONAL_DATA}
    missing = {table.name for table in _user_tables()} - registered
    assert not missing, f"add these tables to PERSONAL_DATA: {sorted(missing)}"
    assert "users" in registered


async def _rows_of(server: RunningServer, user_id: str) -> dict[str, int]:
    counts = {}
    async with server.app[keys.SESSIONMAKER]() as session:
        for table in _user_tables():
            counts[table.name] = await session.scalar(
                select(func.count()).select_from(table).where(table.c.user_id == user_id)
            )
        counts["users"] = await session.scalar(
            select(func.count()).select_from(User).where(User.id == user_id)
        )
    return counts


async def test_erase_leaves_nothing_of_the_user_in_any_table(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    await _populate(server, "gone")
    await _populate(server, "kept")
    kept_before = await _rows_of(server, "kept")
    assert all(await _rows_of(server, "gone"))
    caplog.set_level(logging.INFO, logger="backend.services.personal_data")
    status, answer = await server.request(
        "DELETE", "/api/v1/admin/users/gone", sub="admin", scopes=(SCOPE_ADMIN,)
    )
    assert status == 200
    assert answer["erased"] == {
        "user": 1, "preferences": 1, "subscriptions": 1, "notifications": 3, "email_logs": 2,
        "activity": 2,  # the read and the deleted step
    }  # fmt: skip
    assert not any((await _rows_of(server, "gone")).values())
    assert await _rows_of(server, "kept") == kept_before
    [line] = [r.getMessage() for r in caplog.records if "erased a user" in r.getMessage()]
    assert line.startswith("erased a user: 1 user, ") and "3 notifications" in line
    assert "gone" not in line  # counts, no identity
    # erasing again is harmless: nothing left
    status, answer = await server.request(
        "DELETE", "/api/v1/admin/users/gone", sub="admin", scopes=(SCOPE_ADMIN,)
    )
    assert status == 200 and not any(answer["erased"].values())


async def test_erasing_another_user_needs_the_admin_scope(server: RunningServer) -> None:
    await _populate(server, "target")
    for scopes in ((), (SCOPE_PUBLISH,)):
        status, _ = await server.request(
            "DELETE", "/api/v1/admin/users/target", sub="mallory", scopes=scopes
        )
        assert status == 403
    assert (await server.request("DELETE", "/api/v1/admin/users/target"))[0] == 401
    assert (await _rows_of(server, "target"))["notifications"] == 3


async def _wait_disconnected(clients: list[Any]) -> None:
    async with asyncio.timeout(10):
        while any(client.connected for client in clients):
            await asyncio.sleep(0.05)


async def test_erase_me_closes_every_session_of_the_caller(server: RunningServer) -> None:
    await _populate(server, "leaving")
    mine = [await server.connect("leaving") for _ in range(2)]
    other = await server.connect("staying")
    status, answer = await server.request("DELETE", "/api/v1/me", sub="leaving")
    assert status == 200 and answer["disconnected"] == 2
    await _wait_disconnected([r.client for r in mine])
    assert other.client.connected
    assert not any((await _rows_of(server, "leaving")).values())


async def test_erase_closes_the_users_sessions_on_every_process(
    make_server: MakeServer, redis_server: RedisServer, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("two processes share a database on PostgreSQL")
    a = await make_server(redis_url=redis_server.url)
    b = await make_server(redis_url=redis_server.url)
    remote = await b.connect("roaming")
    local = await a.connect("roaming")
    async with asyncio.timeout(10):  # both sessions in the cluster view
        while len(await a.app[keys.CLUSTER].user_sessions("roaming")) < 2:
            await asyncio.sleep(0.05)
    status, answer = await a.request(
        "DELETE", "/api/v1/admin/users/roaming", sub="admin", scopes=(SCOPE_ADMIN,)
    )
    assert status == 200 and answer["disconnected"] == 2
    await _wait_disconnected([remote.client, local.client])


async def test_a_publish_racing_an_erase_leaves_no_orphan_and_never_fails(
    server: RunningServer,
) -> None:
    before = await _populate(server, "racing")
    body = {"user_ids": ["racing"], "type": "race", "title": "during"}

    async def publish() -> tuple[int, Any]:
        return await server.request(
            "POST", "/api/v1/notifications", sub="svc", scopes=(SCOPE_PUBLISH,), json=body
        )

    erase = server.request("DELETE", "/api/v1/admin/users/racing", sub="a", scopes=(SCOPE_ADMIN,))
    results = await asyncio.gather(
        *[publish() for _ in range(10)], erase, *[publish() for _ in range(10)]
    )
    assert [status for status, _ in results] == [201] * 10 + [200] + [201] * 10
    published = {
        n["id"] for status, answer in results if status == 201 for n in answer["notifications"]
    }
    async with server.app[keys.SESSIONMAKER]() as session:
        rows = list(
            await session.execute(
                select(Notification.id, Notification.seq).where(Notification.user_id == "racing")
            )
        )
        user = (
            await session.execute(
                select(User.last_seq, User.unread_count).where(User.id == "racing")
            )
        ).first()
        logs = await session.scalar(
            select(func.count()).select_from(EmailLog).where(EmailLog.user_id == "racing")
        )
        # No foreign key holds this (migration 0009): the publish's own lock on the user's row
        orphans = await session.scalar(
            select(func.count())
            .select_from(Notification)
            .outerjoin(User, User.id == Notification.user_id)
            .where(User.id.is_(None))
        )
    assert orphans == 0
    assert not {row.id for row in rows} & set(before)  # what was there before is gone
    assert {row.id for row in rows} <= published  # what is left came after the erase ...
    assert logs == 0
    if rows:  # ... for a new user row, consistent with them
        assert user is not None
        assert sorted(row.seq for row in rows) == list(range(1, len(rows) + 1))
        assert user.last_seq == len(rows) and user.unread_count == len(rows)
    else:
        assert user is None or user.last_seq == 0
