"""The admin email log, recipients, and one-click unsubscribe (RFC 8058)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import jwt

from backend.email import tokens
from backend.email.worker import EmailWorker
from backend.models import utcnow

from .conftest import SCOPE_ADMIN, TEST_SECRET, RunningServer
from .email_helpers import Inbox, inbox, mail_server, register, worker_of

__all__ = ["inbox", "mail_server"]  # fixtures
ADMIN = {"sub": "ops", "scopes": (SCOPE_ADMIN,)}


async def send_one(server: RunningServer, inbox: Inbox, user: str, **fields: object) -> str:
    """Publish, let the worker send, return the token from the List-Unsubscribe header."""
    before = len(inbox.messages)
    await server.publish([user], **fields)
    assert await worker_of(server).drain() == 1
    assert len(inbox.messages) == before + 1
    header = inbox.messages[-1][1]["List-Unsubscribe"]
    return parse_qs(urlsplit(header.strip("<>")).query)["token"][0]


async def unsubscribe(server: RunningServer, token: str, **kwargs: object) -> tuple[int, object]:
    return await server.request(
        "POST", f"/api/v1/unsubscribe?token={token}", data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"}, **kwargs,
    )  # fmt: skip


async def test_one_click_unsubscribe_turns_email_off_and_the_next_one_is_not_queued(
    mail_server: RunningServer, inbox: Inbox
) -> None:
    await register(mail_server, "alice", "alice@example.com")
    token = await send_one(mail_server, inbox, "alice", title="First")

    async with mail_server.http.get(f"{mail_server.url}/api/v1/unsubscribe?token={token}") as resp:
        page = await resp.text()
        assert resp.status == 200 and resp.content_type == "text/html"
    assert '<form method="post"' in page and "List-Unsubscribe" in page
    status, prefs = await mail_server.request("GET", "/api/v1/preferences", sub="alice")
    assert prefs["email_notifications"] is True  # a GET never unsubscribes

    status, body = await unsubscribe(mail_server, token)
    assert status == 200
    assert body == {
        "unsubscribed": True, "user_id": "alice", "email_notifications": False, "types": [],
    }  # fmt: skip
    status, prefs = await mail_server.request("GET", "/api/v1/preferences", sub="alice")
    assert prefs["email_notifications"] is False
    await mail_server.publish(["alice"], title="Second")
    assert await worker_of(mail_server).drain() == 0
    assert len(inbox.messages) == 1


async def test_a_per_type_email_unsubscribes_only_that_type(
    mail_server: RunningServer, inbox: Inbox
) -> None:
    await register(mail_server, "bob", "bob@example.com")
    status, _ = await mail_server.request(
        "PUT", "/api/v1/preferences", sub="bob",
        json={"type_settings": {"security": {"email": "immediate", "in_app": True}}},
    )  # fmt: skip
    assert status == 200
    token = await send_one(mail_server, inbox, "bob", type="security", title="New sign-in")
    status, body = await unsubscribe(mail_server, token)
    assert status == 200 and body["types"] == ["security"] and body["email_notifications"]
    status, prefs = await mail_server.request("GET", "/api/v1/preferences", sub="bob")
    assert prefs["email_notifications"] is True
    assert prefs["type_settings"]["security"] == {"email": "never", "in_app": True}
    await mail_server.publish(["bob"], type="security")
    await mail_server.publish(["bob"], type="other", title="Still emailed")
    assert await worker_of(mail_server).drain() == 1
    assert inbox.messages[-1][1]["Subject"] == "Still emailed"


async def test_forged_altered_login_and_expired_tokens_are_refused(
    mail_server: RunningServer, inbox: Inbox
) -> None:
    await register(mail_server, "alice", "alice@example.com")
    good = await send_one(mail_server, inbox, "alice")
    key = tokens.signing_key(mail_server.settings)
    assert key is not None
    scope = tokens.UnsubscribeScope(user_id="alice", all_email=True)
    header, payload, signature = good.split(".")
    forged_for_bob = jwt.encode(
        {"sub": "bob", "purpose": "unsubscribe", "all": True, "types": [], "exp": 9999999999},
        "guessed-secret-guessed-secret-guessed-secret",
        algorithm="HS256",
    )
    refused = {
        "altered": f"{header}.{payload}.{signature[:-4]}AAAA",
        "forged": forged_for_bob,
        "login token": mail_server.token("alice"),
        "raw jwt secret": jwt.encode(
            {"sub": "alice", "purpose": "unsubscribe", "types": [], "exp": 9999999999},
            TEST_SECRET, algorithm="HS256",
        ),
        "expired": tokens.issue(key, scope, now=utcnow() - timedelta(days=91)),
        "garbage": "not-a-token",
    }  # fmt: skip
    for name, token in refused.items():
        status, body = await unsubscribe(mail_server, token)
        assert status == 400, name
        assert body["error"]["code"] == "invalid_token", name
    status, body = await unsubscribe(mail_server, refused["expired"])
    assert body["error"]["message"] == "this unsubscribe link has expired"
    status, body = await mail_server.request("POST", "/api/v1/unsubscribe")
    assert status == 422
    async with mail_server.http.get(
        f"{mail_server.url}/api/v1/unsubscribe?token={refused['forged']}"
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_token"
    status, prefs = await mail_server.request("GET", "/api/v1/preferences", sub="alice")
    assert prefs["email_notifications"] is True


async def test_admin_email_logs_filter_and_paginate_and_need_the_admin_scope(
    mail_server: RunningServer, inbox: Inbox
) -> None:
    for user in ("alice", "bob"):
        await register(mail_server, user, f"{user}@example.com")
    for i in range(3):
        await mail_server.publish(["alice", "bob"], title=f"n{i}")
    inbox.refuse = "550 no such user"
    worker: EmailWorker = worker_of(mail_server)
    await worker.run_once(now=utcnow())  # the first batch of 10 takes all six: all fail
    inbox.refuse = None

    status, body = await mail_server.request("GET", "/api/v1/admin/email-logs", sub="alice")
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, body = await mail_server.request(
        "GET", "/api/v1/admin/email-logs?user_id=bob&status=failed&limit=2", **ADMIN
    )
    assert status == 200
    first = body["email_logs"]
    assert [e["subject"] for e in first] == ["n2", "n1"]
    assert first[0]["failed_reason"] == "550 no such user (bob@example.com)"
    assert set(first[0]) == {
        "id", "user_id", "notification_id", "kind", "period", "recipient", "subject", "status",
        "attempts", "next_attempt_at", "sent_at", "failed_reason", "created_at", "updated_at",
    }  # fmt: skip
    status, body = await mail_server.request(
        "GET", f"/api/v1/admin/email-logs?user_id=bob&limit=2&cursor={body['next_cursor']}",
        **ADMIN,
    )  # fmt: skip
    assert [e["subject"] for e in body["email_logs"]] == ["n0"] and body["next_cursor"] is None

    future = (utcnow() + timedelta(hours=1)).isoformat()
    status, body = await mail_server.request(
        "GET", "/api/v1/admin/email-logs", params={"since": future}, **ADMIN
    )
    assert status == 200 and body["email_logs"] == []
    status, body = await mail_server.request(
        "GET", "/api/v1/admin/email-logs", params={"until": future}, **ADMIN
    )
    assert len(body["email_logs"]) == 6
    for query in ("status=lost", "limit=101", "color=red", "since=yesterday", "cursor=x"):
        status, body = await mail_server.request(
            "GET", f"/api/v1/admin/email-logs?{query}", **ADMIN
        )
        assert status == 422, query
    status, body = await mail_server.request(
        "PUT", "/api/v1/admin/users/carol", json={"email": "not an address"}, **ADMIN
    )
    assert status == 422
    status, body = await mail_server.request(
        "PUT", "/api/v1/admin/users/carol", json={"email": "c@example.com"}, sub="carol"
    )
    assert status == 403
