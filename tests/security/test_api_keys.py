"""API keys for services: shown once, stored hashed, scoped, revoked at once on every process."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import select

from backend import keys
from backend.config import ConfigError, load_settings
from backend.models import ApiKey, Notification

from ..conftest import SCOPE_ADMIN, SCOPE_PUBLISH, TEST_SECRET, RunningServer

MakeServer = Callable[..., Awaitable[RunningServer]]
ADMIN = {"sub": "ops", "scopes": (SCOPE_ADMIN,)}
KEYS = "/api/v1/admin/api-keys"
NOTIFY = "/api/v1/notifications"


async def create_key(server: RunningServer, **permissions: Any) -> dict[str, Any]:
    body = {"name": "billing", "permissions": permissions}
    status, answer = await server.request("POST", KEYS, json=body, **ADMIN)
    assert status == 201, answer
    return answer  # type: ignore[no-any-return]


async def publish_with(server: RunningServer, key: str, **body: Any) -> tuple[int, Any]:
    fields = {"type": "invoice.paid", "title": "Paid", **body}
    return await server.request("POST", NOTIFY, json=fields, headers={"X-API-Key": key})


async def test_a_key_is_shown_once_and_only_its_keyed_hash_is_stored(server: RunningServer) -> None:
    created = await create_key(server, any_user=True)
    key = created["key"]
    assert key.startswith("ntfk_") and len(key) > 40  # a prefix secret scanners can match
    assert created["hint"] == key[: len(created["hint"])] and len(created["hint"]) < 20
    status, listed = await server.request("GET", KEYS, **ADMIN)
    assert status == 200
    [item] = listed["api_keys"]
    assert "key" not in item and item["name"] == "billing" and item["last_used_at"] is None
    async with server.app[keys.SESSIONMAKER]() as session:
        row = await session.scalar(select(ApiKey))
    assert row is not None
    expected = hmac.new(TEST_SECRET.encode(), key.encode(), hashlib.sha256).hexdigest()
    assert row.key_hash == expected
    assert key not in repr(row.__dict__)


async def test_a_key_publishes_and_the_notification_records_which_key(
    server: RunningServer,
) -> None:
    created = await create_key(server, any_user=True)
    status, answer = await publish_with(server, created["key"], user_ids=["alice"])
    assert status == 201, answer
    [note] = answer["notifications"]
    async with server.app[keys.SESSIONMAKER]() as session:
        publisher = await session.scalar(
            select(Notification.publisher).where(Notification.id == note["id"])
        )
    assert publisher == f"key:{created['id']}"


async def test_last_used_at_is_written_throttled_not_per_request(
    make_server: MakeServer,
) -> None:
    server = await make_server(api_key_touch_seconds=3600)
    created = await create_key(server, any_user=True)
    assert (await publish_with(server, created["key"], user_ids=["a"]))[0] == 201
    [first] = (await server.request("GET", KEYS, **ADMIN))[1]["api_keys"]
    assert first["last_used_at"] is not None
    assert (await publish_with(server, created["key"], user_ids=["a"]))[0] == 201
    [second] = (await server.request("GET", KEYS, **ADMIN))[1]["api_keys"]
    assert second["last_used_at"] == first["last_used_at"]


async def test_a_key_may_notify_only_users_its_prefixes_allow(server: RunningServer) -> None:
    created = await create_key(server, user_prefixes=["billing-"])
    assert (await publish_with(server, created["key"], user_ids=["billing-7"]))[0] == 201
    status, answer = await publish_with(server, created["key"], user_ids=["billing-7", "alice"])
    assert status == 403
    assert answer["error"]["details"] == {"user_id": "alice"}
    assert "may not notify user 'alice'" in answer["error"]["message"]


async def test_a_publish_key_is_no_admin_and_an_admin_key_no_publisher(
    server: RunningServer,
) -> None:
    publisher = await create_key(server, any_user=True)
    status, answer = await server.request("GET", KEYS, headers={"X-API-Key": publisher["key"]})
    assert status == 403 and answer["error"]["details"] == {"required_scope": SCOPE_ADMIN}
    admin = await create_key(server, admin=True)
    status, _ = await server.request("GET", KEYS, headers={"X-API-Key": admin["key"]})
    assert status == 200
    status, answer = await publish_with(server, admin["key"], user_ids=["a"])
    assert status == 403 and answer["error"]["details"] == {"required_scope": SCOPE_PUBLISH}


async def test_unknown_and_malformed_keys_are_401(server: RunningServer) -> None:
    for key in ("ntfk_" + "A" * 43, "nonsense", "", "ntfk_" + "é" * 43):
        status, answer = await publish_with(server, key, user_ids=["a"])
        assert status == 401, key
        assert answer["error"]["message"] == "invalid API key"


async def test_only_admins_manage_keys(server: RunningServer) -> None:
    body = {"name": "x", "permissions": {"any_user": True}}
    status, _ = await server.request("POST", KEYS, json=body, sub="svc", scopes=(SCOPE_PUBLISH,))
    assert status == 403
    assert (await server.request("GET", KEYS))[0] == 401


async def test_key_bounds_name_rules_count_and_empty_permissions(
    make_server: MakeServer,
) -> None:
    server = await make_server(api_keys_max=2, api_key_max_rules=3)
    too_long = {"name": "n" * 101, "permissions": {"any_user": True}}
    assert (await server.request("POST", KEYS, json=too_long, **ADMIN))[0] == 422
    nothing = {"name": "n", "permissions": {}}
    status, answer = await server.request("POST", KEYS, json=nothing, **ADMIN)
    assert status == 422 and "at least one permission" in answer["error"]["message"]
    rules = {"name": "n", "permissions": {"topics": ["a", "b", "c", "d"]}}
    status, answer = await server.request("POST", KEYS, json=rules, **ADMIN)
    assert status == 422 and "the limit is 3" in answer["error"]["message"]
    first = await create_key(server, any_user=True)
    await create_key(server, any_user=True)
    body = {"name": "third", "permissions": {"any_user": True}}
    status, answer = await server.request("POST", KEYS, json=body, **ADMIN)
    assert status == 409 and "API_KEYS_MAX" in answer["error"]["message"]
    # a revoked key no longer counts
    assert (await server.request("DELETE", f"{KEYS}/{first['id']}", **ADMIN))[0] == 204
    assert (await server.request("POST", KEYS, json=body, **ADMIN))[0] == 201


async def test_revocation_is_seen_at_once_by_another_process(make_server: MakeServer) -> None:
    """Two servers on one database, no shared memory: the key is revoked on `a` and `b`
    refuses it on the very next request (no cache, and no Redis needed)."""
    a = await make_server()
    b = await make_server()
    created = await create_key(a, any_user=True)
    assert (await publish_with(b, created["key"], user_ids=["alice"]))[0] == 201
    assert (await server_revoke(a, created["id"])) == 204
    status, answer = await publish_with(b, created["key"], user_ids=["alice"])
    assert status == 401
    assert answer["error"]["message"] == "API key revoked"
    status, answer = await b.request("DELETE", f"{KEYS}/{created['id']}", **ADMIN)
    assert status == 404  # revoked already
    listed = (await b.request("GET", KEYS, **ADMIN))[1]["api_keys"]
    assert listed == []


async def server_revoke(server: RunningServer, key_id: int) -> int:
    status, _ = await server.request("DELETE", f"{KEYS}/{key_id}", **ADMIN)
    return status


async def test_cloudevents_need_a_key_that_may_notify_anyone(server: RunningServer) -> None:
    narrow = await create_key(server, user_prefixes=["billing-"])
    headers = {"X-API-Key": narrow["key"], "Content-Type": "application/cloudevents+json"}
    event = {"specversion": "1.0", "id": "1", "source": "/x", "type": "t", "data": {}}
    status, answer = await server.request("POST", "/api/v1/events", json=event, headers=headers)
    assert status == 403
    assert "any_user" in answer["error"]["message"]


def test_api_key_settings_are_read_and_validated() -> None:
    base = {"JWT_SECRET": TEST_SECRET}
    settings = load_settings(
        {**base, "API_KEYS_MAX": "3", "API_KEY_MAX_RULES": "7", "API_KEY_TOUCH_SECONDS": "5"}
    )
    assert (settings.api_keys_max, settings.api_key_max_rules) == (3, 7)
    assert settings.api_key_touch_seconds == 5.0
    for env, message in (
        ({"API_KEYS_MAX": "0"}, "API_KEYS_MAX must be at least 1, got 0"),
        ({"API_KEY_MAX_RULES": "5000"}, "API_KEY_MAX_RULES must be at most 1000"),
        ({"API_KEY_SECRET": "short"}, "API_KEY_SECRET must be at least 32 characters"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings({**base, **env})


async def test_an_admin_key_works_on_every_admin_route_and_a_publish_key_on_none(
    server: RunningServer,
) -> None:
    """Every route that takes the admin scope takes an admin key too (the OpenAPI document
    says so for each): activity, overview, email logs, stats, erase."""
    admin = (await create_key(server, admin=True))["key"]
    publisher = (await create_key(server, any_user=True))["key"]
    routes = [
        ("GET", "/api/v1/admin/activity"),
        ("GET", "/api/v1/admin/overview"),
        ("GET", "/api/v1/admin/email-logs"),
        ("GET", "/api/v1/notifications/websocket/stats"),
        ("GET", KEYS),
        ("DELETE", "/api/v1/admin/users/nobody"),
    ]
    for method, path in routes:
        status, answer = await server.request(method, path, headers={"X-API-Key": admin})
        assert status == 200, (path, answer)
        status, answer = await server.request(method, path, headers={"X-API-Key": publisher})
        assert status == 403, (path, answer)
