"""Publishing to a topic: public ones need the publish scope, private ones a named right."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ..conftest import SCOPE_ADMIN, SCOPE_PUBLISH, RunningServer

MakeServer = Callable[..., Awaitable[RunningServer]]
NOTIFY = "/api/v1/notifications"


@pytest.fixture
async def topics_server(make_server: MakeServer) -> RunningServer:
    return await make_server(public_topics=("news",))


async def publish_token(
    server: RunningServer, topic: str, *scopes: str, **claims: Any
) -> tuple[int, Any]:
    token = server.token("svc", *scopes, **claims)
    body = {"topic": topic, "type": "t", "title": "x"}
    return await server.request(
        "POST", NOTIFY, json=body, headers={"Authorization": f"Bearer {token}"}
    )


async def publish_key(server: RunningServer, topic: str, **permissions: Any) -> tuple[int, Any]:
    status, created = await server.request(
        "POST", "/api/v1/admin/api-keys", json={"name": "k", "permissions": permissions},
        sub="ops", scopes=(SCOPE_ADMIN,),
    )  # fmt: skip
    assert status == 201, created
    body = {"topic": topic, "type": "t", "title": "x"}
    return await server.request("POST", NOTIFY, json=body, headers={"X-API-Key": created["key"]})


async def test_a_publish_token_without_the_topic_claim_gets_403_on_a_private_topic(
    topics_server: RunningServer,
) -> None:
    status, answer = await publish_token(topics_server, "payroll", SCOPE_PUBLISH)
    assert status == 403
    assert answer["error"]["code"] == "forbidden"
    assert answer["error"]["details"] == {"topic": "payroll"}
    assert "'payroll' is private" in answer["error"]["message"]


async def test_a_publish_token_whose_topics_claim_names_it_may_publish_to_a_private_topic(
    topics_server: RunningServer,
) -> None:
    status, answer = await publish_token(
        topics_server, "payroll", SCOPE_PUBLISH, topics=("payroll",)
    )
    assert status == 201, answer


async def test_a_topics_claim_without_the_publish_scope_is_still_403(
    topics_server: RunningServer,
) -> None:
    status, answer = await publish_token(topics_server, "payroll", topics=("payroll",))
    assert status == 403
    assert answer["error"]["details"] == {"required_scope": SCOPE_PUBLISH}


async def test_a_public_topic_needs_the_publish_scope_only(topics_server: RunningServer) -> None:
    assert (await publish_token(topics_server, "news", SCOPE_PUBLISH))[0] == 201
    status, answer = await publish_token(topics_server, "news")
    assert status == 403 and answer["error"]["details"] == {"required_scope": SCOPE_PUBLISH}


async def test_a_key_that_allows_the_topic_may_publish_to_it(topics_server: RunningServer) -> None:
    assert (await publish_key(topics_server, "payroll", topics=["payroll"]))[0] == 201


async def test_a_key_without_the_topic_gets_403_even_if_it_may_notify_anyone(
    topics_server: RunningServer,
) -> None:
    status, answer = await publish_key(topics_server, "payroll", any_user=True, topics=["hr"])
    assert status == 403
    assert answer["error"]["details"] == {"topic": "payroll"}
    assert "this API key does not allow it" in answer["error"]["message"]


async def test_any_publishing_key_may_publish_to_a_public_topic(
    topics_server: RunningServer,
) -> None:
    assert (await publish_key(topics_server, "news", user_prefixes=["x-"]))[0] == 201


async def test_an_admin_only_key_may_not_publish_even_to_a_public_topic(
    topics_server: RunningServer,
) -> None:
    status, answer = await publish_key(topics_server, "news", admin=True)
    assert status == 403 and answer["error"]["details"] == {"required_scope": SCOPE_PUBLISH}


async def test_a_batch_item_to_a_private_topic_without_the_right_refuses_the_whole_batch(
    topics_server: RunningServer,
) -> None:
    items = [
        {"user_ids": ["alice"], "type": "t", "title": "fine"},
        {"topic": "payroll", "type": "t", "title": "not allowed"},
    ]
    status, answer = await topics_server.request(
        "POST", NOTIFY + "/batch", json={"items": items}, sub="svc", scopes=(SCOPE_PUBLISH,)
    )
    assert status == 403, answer
    assert answer["error"]["message"].startswith("items[1]: topic 'payroll' is private")
    listed = (await topics_server.request("GET", NOTIFY, sub="alice"))[1]
    assert listed["notifications"] == []
    token = topics_server.token("svc", SCOPE_PUBLISH, topics=("payroll",))
    status, answer = await topics_server.request(
        "POST", NOTIFY + "/batch", json={"items": items},
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert status == 201, answer
