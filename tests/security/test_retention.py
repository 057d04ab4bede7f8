"""Retention (issue 15 item 4): read, deleted, email logs purged on their clocks, in batches;
recovery from purged history says `recovered: false`, never a silent gap."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from backend import keys
from backend.config import ConfigError, load_settings
from backend.models import EmailLog, Notification, User, utcnow

from ..conftest import RunningServer

MakeServer = Any
POLICY = {
    "retention_read_days": 10,
    "retention_deleted_days": 5,
    "retention_email_log_days": 20,
    "retention_batch_size": 2,
    "retention_batch_pause_seconds": 0.01,
}


async def _ids(server: RunningServer, user_id: str) -> set[int]:
    async with server.app[keys.SESSIONMAKER]() as session:
        rows = await session.scalars(select(Notification.id).where(Notification.user_id == user_id))
        return set(rows)


async def _add_email_logs(server: RunningServer, user_id: str, statuses: list[str]) -> None:
    async with server.app[keys.SESSIONMAKER].begin() as session:
        await session.execute(
            insert(EmailLog),
            [
                {"user_id": user_id, "subject": s, "status": s, "created_at": utcnow()}
                for s in statuses
            ],
        )


async def test_retention_purges_exactly_what_is_due_on_each_clock(make_server: MakeServer) -> None:
    server = await make_server(**POLICY)
    made = [n["id"] for n in await server.publish(["ret"] * 1, title="x")]
    made += [n["id"] for n in await server.publish(["ret"], title="y")]
    made += [n["id"] for n in await server.publish(["ret"], title="z")]
    made += [n["id"] for n in await server.publish(["ret"], title="w")]
    read, deleted, unread, read_deleted = made
    assert (await server.request("POST", f"/api/v1/notifications/{read}/read", sub="ret"))[0] == 204
    assert (await server.request("DELETE", f"/api/v1/notifications/{deleted}", sub="ret"))[0] == 204
    await server.request("POST", f"/api/v1/notifications/{read_deleted}/read", sub="ret")
    await server.request("DELETE", f"/api/v1/notifications/{read_deleted}", sub="ret")
    await _add_email_logs(server, "ret", ["sent", "failed", "skipped", "queued", "sending"])
    retention = server.app[keys.RETENTION]
    start = utcnow()

    assert not any((await retention.run(now=start + timedelta(days=4))).values())
    assert await _ids(server, "ret") == set(made)

    purged = await retention.run(now=start + timedelta(days=6))  # past deleted_days only
    assert purged["deleted notifications"] == 2 and purged["read notifications"] == 0
    assert await _ids(server, "ret") == {read, unread}

    purged = await retention.run(now=start + timedelta(days=11))  # past read_days
    assert purged["read notifications"] == 1 and purged["email logs"] == 0
    assert await _ids(server, "ret") == {unread}

    purged = await retention.run(now=start + timedelta(days=21))  # past email_log_days
    assert purged["email logs"] == 3
    async with server.app[keys.SESSIONMAKER]() as session:
        left = set(await session.scalars(select(EmailLog.status)))
    assert left == {"queued", "sending"}  # the queue itself is never purged
    # an unread notification is kept however old
    assert not any((await retention.run(now=start + timedelta(days=3650))).values())
    assert await _ids(server, "ret") == {unread}


async def test_a_purge_larger_than_a_batch_runs_batch_after_batch(make_server: MakeServer) -> None:
    server = await make_server(**POLICY)  # two rows per transaction
    await server.publish(["many"] * 1)
    for _ in range(4):
        await server.publish(["many"])
    assert (await server.request("POST", "/api/v1/notifications/read-all", sub="many"))[0] == 204
    purged = await server.app[keys.RETENTION].run(now=utcnow() + timedelta(days=11))
    assert purged["read notifications"] == 5
    assert await _ids(server, "many") == set()


async def test_zero_days_keeps_everything_forever(make_server: MakeServer) -> None:
    server = await make_server(
        retention_read_days=0, retention_deleted_days=0, retention_email_log_days=0
    )
    [made] = await server.publish(["keep"])
    await server.request("POST", "/api/v1/notifications/read-all", sub="keep")
    await _add_email_logs(server, "keep", ["sent"])
    purged = await server.app[keys.RETENTION].run(now=utcnow() + timedelta(days=36500))
    assert not any(purged.values())
    assert await _ids(server, "keep") == {made["id"]}


async def _recovery(server: RunningServer, user_id: str, last_seq: int) -> dict[str, Any]:
    recorder = await server.connect(
        user_id, auth={"token": server.token(user_id), "last_seq": last_seq}
    )
    [result] = await recorder.wait_for("recovery")
    await recorder.client.disconnect()
    return {**result, "seqs": [n["seq"] for n in recorder.of("notification")]}


async def test_recovery_from_purged_history_says_recovered_false(make_server: MakeServer) -> None:
    server = await make_server(**POLICY)
    first, second, third = [(await server.publish(["gap"]))[0] for _ in range(3)]
    before = await _recovery(server, "gap", 0)
    assert before["recovered"] is True and before["seqs"] == [1, 2, 3]

    await server.request("POST", f"/api/v1/notifications/{second['id']}/read", sub="gap")
    await server.app[keys.RETENTION].run(now=utcnow() + timedelta(days=11))
    assert await _ids(server, "gap") == {first["id"], third["id"]}

    # From below the purged seq: part of what it missed is gone, so it refetches.
    for last_seq in (0, 1):
        after = await _recovery(server, "gap", last_seq)
        assert after["recovered"] is False and after["seqs"] == []
    # From at or past it: nothing it missed was purged.
    assert (await _recovery(server, "gap", 2)) | {"count": None} == {
        "recovered": True,
        "count": None,
        "last_seq": 3,
        "seqs": [3],
    }


async def test_the_background_task_purges_on_its_interval(make_server: MakeServer) -> None:
    server = await make_server(retention_read_days=365, retention_interval_seconds=0.2)
    [old] = await server.publish(["old"])
    [new] = await server.publish(["old"])
    async with server.app[keys.SESSIONMAKER].begin() as session:
        await session.execute(
            update(Notification)
            .where(Notification.id == old["id"])
            .values(read=True, read_at=utcnow() - timedelta(days=400))
        )
    async with asyncio.timeout(10):
        while await _ids(server, "old") != {new["id"]}:
            await asyncio.sleep(0.1)
    async with server.app[keys.SESSIONMAKER]() as session:
        assert await session.scalar(select(User.purged_seq).where(User.id == "old")) == 1


@pytest.mark.parametrize(
    ("var", "value", "attr", "expected"),
    [
        ("RETENTION_READ_DAYS", "0", "retention_read_days", 0),
        ("RETENTION_DELETED_DAYS", "7", "retention_deleted_days", 7),
        ("RETENTION_EMAIL_LOG_DAYS", "30", "retention_email_log_days", 30),
        ("RETENTION_BATCH_SIZE", "500", "retention_batch_size", 500),
        ("RETENTION_BATCH_PAUSE_SECONDS", "0.5", "retention_batch_pause_seconds", 0.5),
        ("RETENTION_INTERVAL_SECONDS", "60", "retention_interval_seconds", 60.0),
        ("EXPORTS_PER_HOUR", "2", "exports_per_hour", 2),
        ("EXPORT_PAGE_SIZE", "200", "export_page_size", 200),
    ],
)
def test_retention_and_export_settings_are_read_from_the_environment(
    var: str, value: str, attr: str, expected: object
) -> None:
    env = {"JWT_SECRET": "x" * 40, "DATABASE_URL": "postgresql+asyncpg://u@127.0.0.1/db"}
    assert getattr(load_settings({**env, var: value}), attr) == expected


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("RETENTION_READ_DAYS", "-1"),
        ("RETENTION_DELETED_DAYS", "forever"),
        ("RETENTION_EMAIL_LOG_DAYS", "36501"),
        ("RETENTION_BATCH_SIZE", "0"),
        ("RETENTION_BATCH_SIZE", "10001"),
        ("RETENTION_BATCH_PAUSE_SECONDS", "-1"),
        ("EXPORTS_PER_HOUR", "0"),
        ("EXPORT_PAGE_SIZE", "0"),
    ],
)
def test_a_wrong_retention_or_export_setting_is_one_line_error(var: str, value: str) -> None:
    env = {"JWT_SECRET": "x" * 40, "DATABASE_URL": "postgresql+asyncpg://u@127.0.0.1/db"}
    with pytest.raises(ConfigError, match=var):
        load_settings({**env, var: value})
