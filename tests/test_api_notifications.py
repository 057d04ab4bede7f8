"""REST contract: status codes, the notification JSON, the error body, scoping to the caller."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from backend import keys
from backend.models import utcnow
from backend.security import SCOPE_PUBLISH

from .conftest import RunningServer

NOTIFICATION_KEYS = {
    "id", "seq", "type", "title", "body", "icon", "action_url", "data", "created_at", "read_at",
    "delivered_at",
}  # fmt: skip
PUBLISH = ("publisher", (SCOPE_PUBLISH,))


def assert_error(body: Any, code: str) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def publish(server: RunningServer, body: dict[str, Any], **kwargs: Any) -> tuple[int, Any]:
    return await server.request(
        "POST", "/api/v1/notifications", sub="publisher", scopes=(SCOPE_PUBLISH,), json=body,
        **kwargs,
    )  # fmt: skip


async def test_publish_stores_one_notification_per_recipient_with_the_pinned_json(
    server: RunningServer,
) -> None:
    status, body = await publish(
        server,
        {
            "user_ids": ["alice", "bob", "alice"],
            "type": "task.assigned",
            "title": "You have a task",
            "body": "Review the budget",
            "icon": "https://example.com/i.png",
            "action_url": "/tasks/7",
            "data": {"task_id": 7},
        },
    )
    assert status == 201
    items = body["notifications"]
    assert len(items) == 2
    for item in items:
        assert set(item) == NOTIFICATION_KEYS
        assert item["seq"] == 1
        assert item["read_at"] is None
        assert item["data"] == {"task_id": 7}
        assert item["created_at"].endswith("Z")
    status, listed = await server.request("GET", "/api/v1/notifications", sub="alice")
    assert status == 200
    assert [n["id"] for n in listed["notifications"]] == [items[0]["id"]]
    assert listed["next_cursor"] is None


async def test_seq_increases_per_user(server: RunningServer) -> None:
    for _ in range(3):
        await server.publish(["alice"])
    await server.publish(["bob"])
    _, listed = await server.request("GET", "/api/v1/notifications", sub="alice")
    assert [n["seq"] for n in listed["notifications"]] == [3, 2, 1]
    _, listed = await server.request("GET", "/api/v1/notifications", sub="bob")
    assert [n["seq"] for n in listed["notifications"]] == [1]


async def test_concurrent_publishes_give_each_user_gapless_unique_seqs(
    server: RunningServer,
) -> None:
    await asyncio.gather(*(server.publish(["alice", "bob"]) for _ in range(10)))
    for user in ("alice", "bob"):
        _, listed = await server.request("GET", "/api/v1/notifications?limit=100", sub=user)
        assert sorted(n["seq"] for n in listed["notifications"]) == list(range(1, 11))


async def test_unread_counter_matches_the_rows_after_concurrent_publish_read_and_delete(
    server: RunningServer,
) -> None:
    """users.unread_count is kept by each change, not counted: it must equal a real count."""
    status, _ = await server.request(
        "PUT",
        "/api/v1/preferences",
        sub="bob",
        json={"type_settings": {"muted": {"in_app": False}}},
    )
    assert status == 200
    first = [n["id"] for n in await server.publish(["alice"]) for _ in range(1)]

    async def reader(user: str) -> None:
        for _ in range(3):
            _, listed = await server.request("GET", "/api/v1/notifications?limit=5", sub=user)
            ids = [n["id"] for n in listed["notifications"]]
            await server.request("POST", "/api/v1/notifications/read", sub=user, json={"ids": ids})
            if ids:
                await server.request("DELETE", f"/api/v1/notifications/{ids[-1]}", sub=user)

    await asyncio.gather(
        *(server.publish(["alice", "bob"]) for _ in range(8)),
        *(server.publish(["bob"], type="muted") for _ in range(3)),
        reader("alice"),
        reader("bob"),
        server.request("POST", "/api/v1/notifications/read-all", sub="alice"),
        server.request("DELETE", f"/api/v1/notifications/{first[0]}", sub="alice"),
    )
    await asyncio.gather(*(server.publish(["alice", "bob"]) for _ in range(3)))
    for user in ("alice", "bob"):
        _, unread = await server.request(
            "GET", "/api/v1/notifications?unread=true&limit=100", sub=user
        )
        _, count = await server.request("GET", "/api/v1/notifications/unread-count", sub=user)
        assert count == {"count": len(unread["notifications"])}
        assert count["count"] >= 3


async def test_list_paginates_newest_first_by_cursor_and_filters_unread(
    server: RunningServer,
) -> None:
    created = [(await server.publish(["alice"], title=f"n{i}"))[0] for i in range(5)]
    ids = [n["id"] for n in created]
    status, page = await server.request("GET", "/api/v1/notifications?limit=2", sub="alice")
    assert status == 200
    assert [n["id"] for n in page["notifications"]] == ids[::-1][:2]
    cursor = page["next_cursor"]
    status, page2 = await server.request(
        "GET", f"/api/v1/notifications?limit=2&cursor={cursor}", sub="alice"
    )
    assert [n["id"] for n in page2["notifications"]] == ids[::-1][2:4]
    _, page3 = await server.request(
        "GET", f"/api/v1/notifications?limit=2&cursor={page2['next_cursor']}", sub="alice"
    )
    assert [n["id"] for n in page3["notifications"]] == ids[:1]
    assert page3["next_cursor"] is None

    assert await server.request("POST", f"/api/v1/notifications/{ids[4]}/read", sub="alice") == (
        204,
        None,
    )
    _, unread = await server.request("GET", "/api/v1/notifications?unread=true", sub="alice")
    assert [n["id"] for n in unread["notifications"]] == ids[::-1][1:]


async def test_count_read_many_read_all_get_and_delete(server: RunningServer) -> None:
    ids = [(await server.publish(["alice"]))[0]["id"] for _ in range(4)]
    count = ("GET", "/api/v1/notifications/unread-count")
    assert await server.request(*count, sub="alice") == (200, {"count": 4})
    status, _ = await server.request(
        "POST", "/api/v1/notifications/read", sub="alice", json={"ids": ids[:2]}
    )
    assert status == 204
    assert await server.request(*count, sub="alice") == (200, {"count": 2})
    status, _ = await server.request(
        "POST", "/api/v1/notifications/read", sub="alice", json={"id": ids[2]}
    )
    assert status == 204
    status, one = await server.request("GET", f"/api/v1/notifications/{ids[2]}", sub="alice")
    assert status == 200 and one["read_at"] is not None
    status, _ = await server.request("DELETE", f"/api/v1/notifications/{ids[3]}", sub="alice")
    assert status == 204
    assert await server.request(*count, sub="alice") == (200, {"count": 0})
    status, body = await server.request("GET", f"/api/v1/notifications/{ids[3]}", sub="alice")
    assert status == 404
    assert_error(body, "not_found")
    await server.publish(["alice"])
    assert (await server.request("POST", "/api/v1/notifications/read-all", sub="alice"))[0] == 204
    assert await server.request(*count, sub="alice") == (200, {"count": 0})


async def test_another_users_notification_answers_404_never_its_content(
    server: RunningServer,
) -> None:
    [mine] = await server.publish(["alice"], title="secret plans")
    path = f"/api/v1/notifications/{mine['id']}"
    for method, suffix in (("GET", ""), ("POST", "/read"), ("DELETE", "")):
        status, body = await server.request(method, path + suffix, sub="mallory")
        assert status == 404
        assert_error(body, "not_found")
        assert "secret" not in str(body)
    status, _ = await server.request(
        "POST", "/api/v1/notifications/read", sub="mallory", json={"id": mine["id"]}
    )
    assert status == 404
    status, _ = await server.request(
        "POST", "/api/v1/notifications/read", sub="mallory", json={"ids": [mine["id"]]}
    )
    assert status == 204
    assert await server.request("GET", path, sub="alice") == (200, mine)


async def test_idempotent_retry_returns_the_first_result_and_stores_once(
    server: RunningServer,
) -> None:
    body = {"user_ids": ["alice"], "type": "t", "title": "once"}
    headers = {"Idempotency-Key": "req-1"}
    first = await publish(server, body, headers=headers)
    results = await asyncio.gather(*(publish(server, body, headers=headers) for _ in range(5)))
    assert all(result == first for result in results)
    _, listed = await server.request("GET", "/api/v1/notifications", sub="alice")
    assert len(listed["notifications"]) == 1
    status, conflict = await publish(server, {**body, "title": "other"}, headers=headers)
    assert status == 409
    assert_error(conflict, "conflict")


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "bad_request"),
        ({"data": b"a=1", "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"json": {"user_ids": ["a"], "type": "t"}}, 422, "validation_error"),
        ({"json": {"user_ids": ["a"], "type": "t", "title": 5}}, 422, "validation_error"),
        ({"json": {"user_ids": ["a"], "type": "t", "title": "x", "extra": 1}}, 422, "validation_error"),
        ({"json": {"user_ids": ["a"], "topic": "x", "type": "t", "title": "x"}}, 422, "validation_error"),
        ({"json": [1, 2]}, 422, "validation_error"),
        ({"json": {"user_ids": ["a"], "type": "t", "title": "x", "body": "x" * 300_000}}, 413, "payload_too_large"),
    ],
)  # fmt: skip
async def test_bad_publish_bodies_get_their_4xx_and_store_nothing(
    server: RunningServer, kwargs: dict[str, Any], status: int, code: str
) -> None:
    got, body = await server.request(
        "POST", "/api/v1/notifications", sub="publisher", scopes=(SCOPE_PUBLISH,), **kwargs
    )
    assert got == status, body
    assert_error(body, code)
    if status == 422:
        assert body["error"]["details"]
    _, listed = await server.request("GET", "/api/v1/notifications", sub="a")
    assert listed["notifications"] == []


@pytest.mark.parametrize(
    ("query", "status"),
    [("limit=101", 422), ("limit=0", 422), ("limit=abc", 422), ("cursor=-3", 422),
     ("unread=maybe", 422), ("bogus=1", 422), ("limit=100", 200)],
)  # fmt: skip
async def test_list_query_is_validated(server: RunningServer, query: str, status: int) -> None:
    got, body = await server.request("GET", f"/api/v1/notifications?{query}", sub="alice")
    assert got == status
    if status != 200:
        assert_error(body, "validation_error")


async def test_auth_errors_are_401_and_missing_scope_is_403(server: RunningServer) -> None:
    status, body = await server.request("GET", "/api/v1/notifications")
    assert status == 401
    assert_error(body, "unauthorized")
    status, body = await server.request(
        "GET", "/api/v1/notifications", headers={"Authorization": "Bearer nope"}
    )
    assert status == 401 and body["error"]["message"] == "invalid token: malformed"
    expired = server.token("alice", ttl_seconds=-60)
    status, body = await server.request(
        "GET", "/api/v1/notifications", headers={"Authorization": f"Bearer {expired}"}
    )
    assert status == 401 and body["error"]["message"] == "token expired"
    status, body = await server.request(
        "POST", "/api/v1/notifications", sub="alice",
        json={"user_ids": ["bob"], "type": "t", "title": "x"},
    )  # fmt: skip
    assert status == 403
    assert_error(body, "forbidden")


async def test_unknown_routes_and_methods_have_json_errors(server: RunningServer) -> None:
    status, body = await server.request("GET", "/api/v1/nothing-here")
    assert status == 404
    assert_error(body, "not_found")
    status, body = await server.request("PATCH", "/api/v1/notifications", sub="alice")
    assert status == 405
    assert_error(body, "method_not_allowed")
    status, body = await server.request("GET", "/api/v1/notifications/abc", sub="alice")
    assert status == 404


async def test_preferences_default_update_partially_and_validate(server: RunningServer) -> None:
    status, prefs = await server.request("GET", "/api/v1/preferences", sub="alice")
    assert status == 200
    assert prefs == {
        "email_notifications": True,
        "in_app_notifications": True,
        "digest_frequency": "immediate",
        "type_settings": {},
        "timezone": "UTC",
        "digest_hour": 9,
    }
    status, prefs = await server.request(
        "PUT", "/api/v1/preferences", sub="alice",
        json={"digest_frequency": "daily", "type_settings": {"marketing": {"email": "never"}}},
    )  # fmt: skip
    assert status == 200
    assert prefs["digest_frequency"] == "daily"
    assert prefs["type_settings"] == {"marketing": {"email": "never"}}
    status, prefs = await server.request(
        "PUT", "/api/v1/preferences", sub="alice", json={"email_notifications": False}
    )
    assert prefs["digest_frequency"] == "daily" and prefs["email_notifications"] is False
    for bad in ({"digest_frequency": "sometimes"}, {"timezone": "Mars/Olympus"}, {"x": 1}):
        status, body = await server.request("PUT", "/api/v1/preferences", sub="alice", json=bad)
        assert status == 422, bad
        assert_error(body, "validation_error")


async def test_in_app_off_stores_but_neither_lists_nor_counts(server: RunningServer) -> None:
    await server.request(
        "PUT", "/api/v1/preferences", sub="alice", json={"in_app_notifications": False}
    )
    created = await server.publish(["alice"])
    assert len(created) == 1
    _, listed = await server.request("GET", "/api/v1/notifications", sub="alice")
    assert listed["notifications"] == []
    assert await server.request("GET", "/api/v1/notifications/unread-count", sub="alice") == (
        200,
        {"count": 0},
    )


async def test_health_and_openapi(server: RunningServer) -> None:
    assert await server.request("GET", "/health/live") == (200, {"status": "ok"})
    status, ready = await server.request("GET", "/health/ready")
    assert status == 200 and ready["checks"]["database"] == "ok"
    status, doc = await server.request("GET", "/api/v1/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.")
    post = doc["paths"]["/api/v1/notifications"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/NotificationCreate"
    )
    assert "NotificationCreate" in doc["components"]["schemas"]
    assert "/api/v1/notifications/{id}" in doc["paths"]


async def test_idempotency_keys_past_retention_are_purged(server: RunningServer) -> None:
    body = {"user_ids": ["alice"], "type": "t", "title": "once"}
    await publish(server, body, headers={"Idempotency-Key": "old"})
    service = server.app[keys.NOTIFICATIONS]
    assert await service.purge_idempotency_keys(older_than=utcnow() - timedelta(hours=1)) == 0
    assert await service.purge_idempotency_keys(older_than=utcnow() + timedelta(seconds=1)) == 1
    status, _ = await publish(server, body, headers={"Idempotency-Key": "old"})
    assert status == 201
    _, listed = await server.request("GET", "/api/v1/notifications", sub="alice")
    assert len(listed["notifications"]) == 2


async def test_openapi_path_parameters_have_their_types(server: RunningServer) -> None:
    _, doc = await server.request("GET", "/api/v1/openapi.json")
    [by_id] = doc["paths"]["/api/v1/notifications/{id}"]["get"]["parameters"]
    assert by_id["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
    [topic] = doc["paths"]["/api/v1/topics/{topic}/subscription"]["put"]["parameters"]
    assert topic["schema"] == {
        "type": "string",
        "minLength": 1,
        "maxLength": 128,
        "pattern": "^[A-Za-z0-9_.:\\-]+$",
    }
