"""Immediate emails through a real SMTP server: content, headers, retries, refusals, leases."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

import pytest

from backend.db import create_engine, create_sessionmaker
from backend.email import queue
from backend.email.worker import EmailWorker
from backend.models import utcnow

from .conftest import SCOPE_ADMIN, RunningServer
from .email_helpers import (
    APP_URL,
    Inbox,
    inbox,
    logs,
    mail_server,
    parts,
    register,
    sessionmaker_of,
    start_server,
    worker_of,
)
from .servers import free_port

__all__ = ["inbox", "mail_server"]  # fixtures


async def test_message_arrives_with_recipient_subject_both_parts_and_unsubscribe_headers(
    mail_server: RunningServer, inbox: Inbox
) -> None:
    await register(mail_server, "alice", "alice@example.com", "Alice Liddell")
    [created] = await mail_server.publish(
        ["alice"],
        title="Deploy done\r\nBcc: victim@example.com",
        body="Version <b>2</b> is live",
        action_url="/deploys/2",
    )
    assert await worker_of(mail_server).drain() == 1

    [(rcpt, message)] = inbox.messages
    assert rcpt == ["alice@example.com"]
    assert message["To"] == "Alice Liddell <alice@example.com>"
    assert message["Subject"] == "Deploy done Bcc: victim@example.com"
    assert "Bcc" not in message and "victim" not in "".join(rcpt)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Unsubscribe"].startswith(f"<{APP_URL}/api/v1/unsubscribe?token=")
    unfolded = f"\r\nList-Unsubscribe: <{APP_URL}/api/v1/unsubscribe?token=".encode()
    assert unfolded in inbox.raw[0]  # one line, no encoded-words: what mail clients parse
    body = parts(message)
    assert set(body) == {"text/plain", "text/html"}
    assert "Version <b>2</b> is live" in body["text/plain"]
    assert f"{APP_URL}/deploys/2" in body["text/plain"]
    assert "Version &lt;b&gt;2&lt;/b&gt; is live" in body["text/html"]
    assert f'href="{APP_URL}/deploys/2"' in body["text/html"]

    [row] = await logs(sessionmaker_of(mail_server))
    assert (row.status, row.attempts, row.notification_id) == ("sent", 1, created["id"])
    assert row.sent_at is not None and row.recipient == "alice@example.com"
    assert message["Message-ID"] == f"<email-log-{row.id}@localhost>"
    assert await worker_of(mail_server).drain() == 0  # nothing is sent twice
    assert len(inbox.messages) == 1


async def test_users_without_email_are_skipped_and_preferences_decide(
    mail_server: RunningServer, inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="backend.services.emails")
    await register(mail_server, "bob", "bob@example.com")
    await register(mail_server, "carol", "carol@example.com")
    status, _ = await mail_server.request(
        "PUT", "/api/v1/preferences", sub="carol",
        json={"email_notifications": False, "type_settings": {"security": {"email": "immediate"}}},
    )  # fmt: skip
    assert status == 200
    await mail_server.publish(["nomail", "bob", "carol"], type="news", title="News")
    await mail_server.publish(["carol"], type="security", title="New sign-in")
    assert "without an email address: nomail" in caplog.text
    assert await worker_of(mail_server).drain() == 2
    got = sorted((rcpt[0], m["Subject"]) for rcpt, m in inbox.messages)
    assert got == [("bob@example.com", "News"), ("carol@example.com", "New sign-in")]


async def test_smtp_down_then_up_retries_with_backoff_and_counts_attempts(
    database_url: str, tmp_path: Path
) -> None:
    box = Inbox(port=free_port())  # nothing listens there yet
    server = await start_server(
        database_url, tmp_path, smtp_host="127.0.0.1", smtp_port=box.port, smtp_timeout_seconds=2.0
    )
    try:
        await register(server, "alice", "alice@example.com")
        await server.publish(["alice"], title="Retry me")
        worker = worker_of(server)
        t0 = utcnow()
        assert await worker.drain(now=t0) == 1
        [row] = await logs(sessionmaker_of(server))
        assert (row.status, row.attempts) == ("queued", 1)
        assert row.failed_reason is not None and row.failed_reason.startswith("attempt 1: ")
        # jittered exponential backoff: between 50% and 100% of 60 s after the first attempt
        assert t0 + timedelta(seconds=30) <= row.next_attempt_at <= t0 + timedelta(seconds=60)
        assert await worker.drain(now=t0 + timedelta(seconds=10)) == 0  # not due yet

        assert await worker.drain(now=t0 + timedelta(seconds=61)) == 1
        [row] = await logs(sessionmaker_of(server))
        assert (row.status, row.attempts) == ("queued", 2)
        assert row.next_attempt_at >= t0 + timedelta(seconds=61 + 60)  # the step doubled

        box.start()
        try:
            assert await worker.drain(now=t0 + timedelta(seconds=400)) == 1
            [row] = await logs(sessionmaker_of(server))
            assert (row.status, row.attempts, row.failed_reason) == ("sent", 3, None)
            assert row.sent_at == t0 + timedelta(seconds=400)
            assert [m["Subject"] for _, m in box.messages] == ["Retry me"]
        finally:
            box.stop()
    finally:
        await server.close()


async def test_attempts_run_out_then_failed_with_the_last_reason(
    database_url: str, tmp_path: Path
) -> None:
    server = await start_server(
        database_url, tmp_path, smtp_host="127.0.0.1", smtp_port=free_port(),
        email_max_attempts=2,
    )  # fmt: skip
    try:
        await register(server, "alice", "alice@example.com")
        await server.publish(["alice"])
        worker, t0 = worker_of(server), utcnow()
        await worker.drain(now=t0)
        await worker.drain(now=t0 + timedelta(hours=1))
        [row] = await logs(sessionmaker_of(server))
        assert (row.status, row.attempts) == ("failed", 2)
        assert row.failed_reason is not None and "cannot deliver via 127.0.0.1" in row.failed_reason
        assert await worker.drain(now=t0 + timedelta(days=1)) == 0
    finally:
        await server.close()


async def test_permanent_refusal_fails_with_the_servers_reason_and_admin_can_retry(
    mail_server: RunningServer, inbox: Inbox
) -> None:
    await register(mail_server, "bob", "bob@example.com")
    await mail_server.publish(["bob"], title="For Bob")
    inbox.refuse = "550 5.1.1 <bob@example.com>: mailbox unavailable"
    worker = worker_of(mail_server)
    assert await worker.drain() == 1
    [row] = await logs(sessionmaker_of(mail_server))
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.failed_reason == (
        "550 5.1.1 <bob@example.com>: mailbox unavailable (bob@example.com)"
    )
    assert inbox.messages == []

    admin = {"sub": "ops", "scopes": (SCOPE_ADMIN,)}
    status, body = await mail_server.request(
        "POST", f"/api/v1/admin/email-logs/{row.id}/retry", **admin
    )
    assert status == 200 and body["status"] == "queued" and body["attempts"] == 0
    status, body = await mail_server.request(
        "POST", f"/api/v1/admin/email-logs/{row.id}/retry", **admin
    )
    assert status == 409 and body["error"]["code"] == "conflict"
    status, body = await mail_server.request("POST", "/api/v1/admin/email-logs/999/retry", **admin)
    assert status == 404
    inbox.refuse = None
    assert await worker.drain() == 1
    [row] = await logs(sessionmaker_of(mail_server))
    assert (row.status, row.attempts) == ("sent", 1)
    assert len(inbox.messages) == 1


async def test_a_crashed_claim_is_reclaimed_after_the_lease_and_the_late_worker_loses(
    mail_server: RunningServer, inbox: Inbox
) -> None:
    await register(mail_server, "alice", "alice@example.com")
    await mail_server.publish(["alice"], title="Survives a crash")
    sessionmaker, t0 = sessionmaker_of(mail_server), utcnow()
    async with sessionmaker.begin() as session:  # a worker claims, then "crashes"
        [claimed] = await queue.claim(session, now=t0, lease_seconds=300, limit=10)
    worker = worker_of(mail_server)
    assert await worker.drain(now=t0 + timedelta(seconds=299)) == 0  # still leased
    assert await worker.drain(now=t0 + timedelta(seconds=301)) == 1
    [row] = await logs(sessionmaker)
    assert (row.status, row.attempts) == ("sent", 2)
    async with sessionmaker.begin() as session:  # the first worker wakes up too late
        assert not await queue.settle(session, claimed, now=utcnow(), status="failed")
    [row] = await logs(sessionmaker)
    assert row.status == "sent" and len(inbox.messages) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_workers_on_one_postgresql_send_each_row_exactly_once(
    mail_server: RunningServer, inbox: Inbox
) -> None:
    users = [f"user{i}" for i in range(12)]
    for user in users:
        await register(mail_server, user, f"{user}@example.com")
    for round_ in range(4):
        await mail_server.publish(users, title=f"Round {round_}")
    settings, inbox.delay = mail_server.settings, 0.02
    engines = [create_engine(settings), create_engine(settings)]  # as two processes would
    try:
        workers = [
            EmailWorker(sessionmaker=create_sessionmaker(e), settings=settings, batch_size=3)
            for e in engines
        ]
        handled = await asyncio.gather(*(w.drain() for w in workers))
    finally:
        for engine in engines:
            await engine.dispose()
    assert sum(handled) == 48 and all(handled)  # both took part
    rows = await logs(sessionmaker_of(mail_server))
    assert {(r.status, r.attempts) for r in rows} == {("sent", 1)}
    ids = [m["Message-ID"] for _, m in inbox.messages]
    assert len(ids) == 48 and len(set(ids)) == 48


async def test_email_if_unread_waits_then_skips_read_ones_and_sends_unread_ones(
    mail_server: RunningServer, inbox: Inbox
) -> None:
    await register(mail_server, "alice", "alice@example.com")
    status, _ = await mail_server.request(
        "PUT", "/api/v1/preferences", sub="alice",
        json={"type_settings": {"mention": {"email_if_unread_after": 10}}},
    )  # fmt: skip
    assert status == 200
    [read_one] = await mail_server.publish(["alice"], type="mention", title="Read in time")
    [unread_one] = await mail_server.publish(["alice"], type="mention", title="Never opened")
    worker, t0 = worker_of(mail_server), utcnow()
    assert await worker.drain(now=t0) == 0  # waiting
    status, _ = await mail_server.request(
        "POST", f"/api/v1/notifications/{read_one['id']}/read", sub="alice"
    )
    assert status == 204
    assert await worker.drain(now=t0 + timedelta(minutes=11)) == 2
    rows = {r.notification_id: r for r in await logs(sessionmaker_of(mail_server))}
    assert rows[read_one["id"]].status == "skipped"
    assert rows[read_one["id"]].failed_reason == "read in the app before the email was due"
    assert rows[unread_one["id"]].status == "sent"
    assert [m["Subject"] for _, m in inbox.messages] == ["Never opened"]


async def test_outbox_backend_writes_eml_files_logged_as_sent(
    database_url: str, tmp_path: Path
) -> None:
    server = await start_server(database_url, tmp_path, email_worker_enabled=True,
                                email_poll_seconds=0.05)  # fmt: skip
    try:
        await register(server, "alice", "alice@example.com")
        await server.publish(["alice"], title="To the outbox")
        admin = {"sub": "ops", "scopes": (SCOPE_ADMIN,)}
        async with asyncio.timeout(10):  # the worker the server started in cleanup_ctx
            while True:
                status, body = await server.request("GET", "/api/v1/admin/email-logs", **admin)
                if body["email_logs"] and body["email_logs"][0]["status"] == "sent":
                    break
                await asyncio.sleep(0.05)
        files = list((tmp_path / "outbox").glob("*.eml"))
        assert [f.name for f in files] == [f"email-log-{body['email_logs'][0]['id']}.eml"]
        text = files[0].read_text()
        assert "Subject: To the outbox" in text and "List-Unsubscribe-Post" in text
    finally:
        await server.close()


async def test_the_address_comes_from_the_email_claim_on_connect(
    mail_server: RunningServer, inbox: Inbox
) -> None:
    token = mail_server.token("dora", email="dora@example.com", name="Dora")
    await mail_server.connect("dora", auth={"token": token})
    await mail_server.publish(["dora"], title="Seen by the socket and the inbox")
    assert await worker_of(mail_server).drain() == 1
    [(rcpt, message)] = inbox.messages
    assert rcpt == ["dora@example.com"] and message["To"] == "Dora <dora@example.com>"
