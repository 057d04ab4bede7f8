"""Metrics move by exactly what a scripted session did; /metrics labels are route templates."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from backend import keys
from backend.email.worker import EmailWorker
from backend.security import SCOPE_ADMIN

from ..conftest import RunningServer, refused_connect
from ..email_helpers import Inbox, inbox, mail_server, register, sessionmaker_of

__all__ = ["inbox", "mail_server"]  # fixtures

Sample = tuple[str, tuple[tuple[str, str], ...]]


async def scrape(server: RunningServer) -> dict[Sample, float]:
    async with server.http.get(server.url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def delta(
    before: dict[Sample, float], after: dict[Sample, float], name: str, **labels: str
) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in after, f"{name}{labels} not in /metrics"
    return after[key] - before.get(key, 0.0)


async def wait_delivered(server: RunningServer, notification_id: int) -> None:
    """Until the admin timeline shows the receipt (bounded: 5 s)."""
    for _ in range(100):
        status, answer = await server.request(
            "GET", f"/api/v1/admin/notifications/{notification_id}/activity",
            sub="admin", scopes=(SCOPE_ADMIN,),
        )  # fmt: skip
        assert status == 200, answer
        if answer["notification"]["delivered_at"] is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the receipt never set delivered_at")


async def test_a_scripted_session_moves_each_metric_by_exactly_what_happened(
    mail_server: RunningServer, inbox: Inbox
) -> None:
    server = mail_server
    await register(server, "alice", "alice@example.com")
    worker = EmailWorker(
        sessionmaker=sessionmaker_of(server), settings=server.settings,
        metrics=server.app[keys.METRICS],
    )  # fmt: skip
    before = await scrape(server)

    alice = await server.connect("alice")
    [created] = await server.publish(["alice"], type="deploy", title="Deployed")
    await alice.wait_for("notification")
    await alice.client.emit(
        "received", {"seqs": [created["seq"]]}
    )  # the receipt, as clients send it
    await wait_delivered(server, created["id"])
    status, _ = await server.request("GET", f"/api/v1/notifications/{created['id']}", sub="alice")
    assert status == 200
    assert (await alice.call("mark_read", {"ids": [created["id"]]}))["ok"] is True
    await alice.wait_for("unread_count", 2)
    assert await worker.drain() == 1
    assert len(inbox.messages) == 1
    await refused_connect(server, {"token": "not-a-token"})
    again = await server.connect("alice", auth={"token": server.token("alice"), "last_seq": 0})
    [recovery] = await again.wait_for("recovery")
    assert recovery["recovered"] is True and recovery["count"] == 1

    after = await scrape(server)
    d = lambda name, **labels: delta(before, after, name, **labels)  # noqa: E731
    assert d("notify_notifications_stored_total", type="deploy", source="token") == 1
    assert d("notify_notifications_created_total") == 1
    assert d("notify_publish_commit_to_emit_seconds_count") == 1
    assert d("notify_commit_to_receipt_seconds_count") == 1  # one notification, one first receipt
    assert d("notify_activity_pushed_steps_total", outcome="dropped") == 0
    route = "/api/v1/notifications"
    assert d("notify_http_requests_total", method="POST", route=route, status="201") == 1
    assert d("notify_http_request_duration_seconds_count", route=route) == 1
    # the id is a template variable, not a label value of its own
    one = "/api/v1/notifications/{id}"
    assert d("notify_http_requests_total", method="GET", route=one, status="200") == 1
    raw = f"/notifications/{created['id']}"
    assert not any(dict(labels).get("route", "").endswith(raw) for _, labels in after)
    # to alice: notification + unread_count, then notifications_read + unread_count, then the
    # second session's recovered notification and its recovery event
    assert d("notify_socket_deliveries_total") == 6
    assert d("notify_socket_coalesced_total") == 0
    assert d("notify_recoveries_total", outcome="recovered") == 1
    assert d("notify_recoveries_total", outcome="too_far") == 0
    assert d("notify_refusals_total", reason="auth") == 1
    assert d("notify_refusals_total", reason="connect_rate") == 0
    assert d("notify_emails_total", status="sent") == 1
    assert d("notify_email_send_seconds_count") == 1
    assert d("notify_db_query_seconds_count") > 0
    assert after[("notify_db_pool_in_use", ())] >= 0


async def test_notification_types_beyond_the_cap_are_counted_as_other(
    make_server: Any,
) -> None:
    server = await make_server(metrics_max_types=2)
    for kind in ("a", "b", "c", "d"):
        await server.publish(["alice"], type=kind)
    after = await scrape(server)
    counted = {
        dict(labels)["type"]: value
        for (name, labels), value in after.items()
        if name == "notify_notifications_stored_total"
    }
    assert counted == {"a": 1, "b": 1, "other": 2}
