"""A template's email parts are what the user receives: rendered once at publish, escaped,
stored with the queued email (immediate and held alike), never re-rendered after an edit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from backend.models import utcnow

from ..conftest import SCOPE_ADMIN, SCOPE_PUBLISH, RunningServer
from ..email_helpers import (
    APP_URL,
    Inbox,
    inbox,
    logs,
    mail_server,
    parts,
    register,
    sessionmaker_of,
    worker_of,
)

__all__ = ["inbox", "mail_server"]  # fixtures

ADMIN = {"sub": "ops", "scopes": (SCOPE_ADMIN,)}
PUBLISH = {"sub": "svc", "scopes": (SCOPE_PUBLISH,)}
TEMPLATE = "/api/v1/admin/templates/task.assigned"
EMAILED = {
    "title": "{{ who }} assigned you {{ task }}",
    "body": "Due {{ due }}",
    "email_subject": "[Tasks] {{ task }} is yours",
    "email_text": "Hi, {{ who }} needs {{ task }} by {{ due }}.",
    "email_html": "<p class=tpl>{{ who }} needs <b>{{ task }}</b> by {{ due }}.</p>",
}
VARIABLES = {"who": "Bob <script>", "task": "Q3 report", "due": "Friday"}


async def put(server: RunningServer, source: dict[str, Any]) -> None:
    status, answer = await server.request("PUT", TEMPLATE, json=source, **ADMIN)
    assert status == 200, answer


async def publish(server: RunningServer, users: list[str], variables: dict[str, Any]) -> Any:
    body = {"user_ids": users, "type": "task.assigned", "template": "task.assigned",
            "variables": variables}  # fmt: skip
    status, answer = await server.request("POST", "/api/v1/notifications", json=body, **PUBLISH)
    assert status == 201, answer
    return answer["notifications"]


def received(inbox: Inbox) -> dict[str, Any]:
    return {rcpt[0]: message for rcpt, message in inbox.messages}


async def test_the_sent_email_is_the_templates_subject_text_and_html_immediate_and_held(
    mail_server: RunningServer, inbox: Inbox
) -> None:
    await register(mail_server, "alice", "alice@example.com")
    await register(mail_server, "bob", "bob@example.com")
    status, _ = await mail_server.request(
        "PUT", "/api/v1/preferences", sub="bob",
        json={"type_settings": {"task.assigned": {"email_if_unread_after": 10}}},
    )  # fmt: skip
    assert status == 200
    await put(mail_server, EMAILED)
    await publish(mail_server, ["alice", "bob"], VARIABLES)
    # Edited before either email goes out (bob's is held for 10 minutes): not retroactive.
    await put(mail_server, {**EMAILED, "email_subject": "changed", "email_text": "changed",
                            "email_html": "<p>changed</p>"})  # fmt: skip
    worker, t0 = worker_of(mail_server), utcnow()
    assert await worker.drain(now=t0) == 1  # alice's; bob's waits
    assert await worker.drain(now=t0 + timedelta(minutes=11)) == 1

    by_user = received(inbox)
    assert set(by_user) == {"alice@example.com", "bob@example.com"}
    for message in by_user.values():
        assert message["Subject"] == "[Tasks] Q3 report is yours"
        body = parts(message)
        assert set(body) == {"text/plain", "text/html"}
        text, html = body["text/plain"], body["text/html"]
        assert text.startswith("Hi, Bob <script> needs Q3 report by Friday.")
        assert "Stop these emails: " + APP_URL + "/api/v1/unsubscribe?token=" in text
        assert "changed" not in text and "changed" not in html
        # autoescaped when rendered at publish, framed by the layout (unsubscribe footer)
        assert "<p class=tpl>Bob &lt;script&gt; needs <b>Q3 report</b> by Friday.</p>" in html
        assert "<script>" not in html
        assert f"{APP_URL}/api/v1/unsubscribe?token=" in html
        assert "assigned you" not in html  # the layout's title heading gives way to the template
    rows = await logs(sessionmaker_of(mail_server))
    assert {(r.status, r.subject) for r in rows} == {("sent", "[Tasks] Q3 report is yours")}


async def test_a_template_without_email_parts_falls_back_to_the_layouts(
    mail_server: RunningServer, inbox: Inbox
) -> None:
    await register(mail_server, "alice", "alice@example.com")
    await put(mail_server, {"title": EMAILED["title"], "body": EMAILED["body"]})
    await publish(mail_server, ["alice"], VARIABLES)
    assert await worker_of(mail_server).drain() == 1
    [(_, message)] = inbox.messages
    assert message["Subject"] == "Bob <script> assigned you Q3 report"
    body = parts(message)
    assert set(body) == {"text/plain", "text/html"}
    assert "Bob <script> assigned you Q3 report" in body["text/plain"]
    assert "Due Friday" in body["text/plain"]
    assert ">Bob &lt;script&gt; assigned you Q3 report</h2>" in body["text/html"]


async def test_each_email_part_a_template_lacks_comes_from_the_layouts_with_a_text_part_always(
    mail_server: RunningServer, inbox: Inbox
) -> None:
    for user in ("html", "text", "subject"):
        await register(mail_server, user, f"{user}@example.com")
    base = {"title": EMAILED["title"], "body": EMAILED["body"]}
    await put(mail_server, {**base, "email_html": EMAILED["email_html"]})
    await publish(mail_server, ["html"], VARIABLES)
    await put(mail_server, {**base, "email_text": EMAILED["email_text"]})
    await publish(mail_server, ["text"], VARIABLES)
    await put(mail_server, {**base, "email_subject": EMAILED["email_subject"]})
    await publish(mail_server, ["subject"], VARIABLES)
    assert await worker_of(mail_server).drain() == 3
    by_user = received(inbox)

    html_only = by_user["html@example.com"]
    assert html_only["Subject"] == "Bob <script> assigned you Q3 report"
    body = parts(html_only)
    assert "<b>Q3 report</b>" in body["text/html"]
    assert "Bob <script> assigned you Q3 report" in body["text/plain"]  # the layout's text

    text_only = by_user["text@example.com"]
    assert parts(text_only) == {"text/plain": parts(text_only)["text/plain"]}  # no HTML part
    assert parts(text_only)["text/plain"].startswith("Hi, Bob <script> needs Q3 report")

    subject_only = by_user["subject@example.com"]
    assert subject_only["Subject"] == "[Tasks] Q3 report is yours"
    body = parts(subject_only)
    assert ">Bob &lt;script&gt; assigned you Q3 report</h2>" in body["text/html"]
    assert "Due Friday" in body["text/plain"]


async def test_batch_items_emails_use_their_templates_email_parts(
    mail_server: RunningServer, inbox: Inbox
) -> None:
    await register(mail_server, "alice", "alice@example.com")
    await put(mail_server, EMAILED)
    item = {"user_ids": ["alice"], "type": "task.assigned", "template": "task.assigned",
            "variables": VARIABLES}  # fmt: skip
    status, answer = await mail_server.request(
        "POST", "/api/v1/notifications/batch", json={"items": [item]}, **PUBLISH
    )
    assert status == 201, answer
    assert await worker_of(mail_server).drain() == 1
    [(_, message)] = inbox.messages
    assert message["Subject"] == "[Tasks] Q3 report is yours"
    assert parts(message)["text/plain"].startswith("Hi, Bob <script> needs Q3 report")
