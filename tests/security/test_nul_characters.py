"""A NUL character cannot be stored in PostgreSQL's text: refused at the edge on both databases,
so the same request is a 422 on SQLite and on PostgreSQL, never a 500 from the INSERT."""

from __future__ import annotations

from typing import Any

import pytest

from ..conftest import SCOPE_ADMIN, SCOPE_PUBLISH, RunningServer

PUBLISH_FIELDS: dict[str, dict[str, Any]] = {
    "title": {"title": "a\x00b"},
    "body": {"body": "a\x00b"},
    "action_url": {"action_url": "/tasks/\x00"},
    "icon": {"icon": "https://x.example/\x00.png"},
    "a user id": {"user_ids": ["ann\x00"]},
}


@pytest.mark.parametrize("field", PUBLISH_FIELDS.values(), ids=PUBLISH_FIELDS.keys())
async def test_a_publish_with_a_nul_in_a_text_field_is_422_and_stores_nothing(
    server: RunningServer, field: dict[str, Any]
) -> None:
    body = {"user_ids": ["ann"], "type": "t", "title": "hello", **field}
    status, answer = await server.request(
        "POST", "/api/v1/notifications", sub="svc", scopes=(SCOPE_PUBLISH,), json=body
    )
    assert status == 422, answer
    status, listed = await server.request("GET", "/api/v1/notifications", sub="ann")
    assert (status, listed["notifications"]) == (200, [])


async def test_nul_characters_inside_data_are_kept(server: RunningServer) -> None:
    """`data` is a JSON column, which holds any JSON string: nothing to refuse there."""
    [stored] = await server.publish(["ann"], data={"k\x00": "v\x00"})
    assert stored["data"] == {"k\x00": "v\x00"}


async def test_a_nul_in_a_recipient_name_or_an_email_log_filter_is_422(
    server: RunningServer,
) -> None:
    status, answer = await server.request(
        "PUT", "/api/v1/admin/users/ann", sub="ops", scopes=(SCOPE_ADMIN,), json={"name": "a\x00"}
    )
    assert status == 422, answer
    status, answer = await server.request(
        "PUT", "/api/v1/admin/users/a%00b", sub="ops", scopes=(SCOPE_ADMIN,), json={"name": "a"}
    )
    assert status in (404, 422), answer
    status, answer = await server.request(
        "GET", "/api/v1/admin/email-logs?user_id=a%00b", sub="ops", scopes=(SCOPE_ADMIN,)
    )
    assert status == 422, answer


async def test_a_token_whose_sub_holds_a_nul_is_refused(server: RunningServer) -> None:
    status, answer = await server.request("GET", "/api/v1/notifications", sub="ann\x00")
    assert status == 401, answer
    assert answer["error"]["message"].startswith("invalid token: sub")
