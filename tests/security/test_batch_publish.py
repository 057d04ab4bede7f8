"""POST /api/v1/notifications/batch: one transaction for many notifications, a result per item.

A batch is atomic for storage: an invalid item, a bound passed or a reused key fails the whole
batch before anything is stored. Each item's idempotency key works as a single publish's (and
shares its namespace); deliveries follow the commit exactly as for single publishes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..conftest import SCOPE_PUBLISH, RunningServer

BATCH = "/api/v1/notifications/batch"


def item(user_ids: list[str], title: str = "Hello", **fields: Any) -> dict[str, Any]:
    return {"user_ids": user_ids, "type": "batch.test", "title": title, **fields}


async def post_batch(
    server: RunningServer, items: list[dict[str, Any]], **kwargs: Any
) -> tuple[int, Any]:
    return await server.request(
        "POST", BATCH, sub="publisher", scopes=(SCOPE_PUBLISH,), json={"items": items}, **kwargs
    )


async def inbox(server: RunningServer, user: str) -> list[dict[str, Any]]:
    status, answer = await server.request("GET", "/api/v1/notifications?limit=100", sub=user)
    assert status == 200, answer
    return list(answer["notifications"])


async def test_a_batch_stores_items_of_different_types_and_recipients_with_a_result_each(
    server: RunningServer,
) -> None:
    items = [
        item(["b-ann", "b-bob"], "first"),
        {**item(["b-bob"], "second"), "type": "other.kind", "data": {"n": 2}},
        item(["b-cid"], "third", idempotency_key="key-3"),
    ]
    status, answer = await post_batch(server, items)
    assert status == 201, answer
    results = answer["results"]
    assert [r["status"] for r in results] == ["created"] * 3
    assert [len(r["notifications"]) for r in results] == [2, 1, 1]
    assert results[1]["notifications"][0]["type"] == "other.kind"
    assert results[1]["notifications"][0]["data"] == {"n": 2}
    bob = await inbox(server, "b-bob")
    assert [n["title"] for n in bob] == ["second", "first"]
    assert [n["seq"] for n in bob] == [2, 1]  # the items' order is the seq order


async def test_one_invalid_item_rejects_the_whole_batch_and_stores_nothing(
    server: RunningServer,
) -> None:
    cases = [
        [item(["b-ann"]), item(["b-ann"], title="")],  # schema: empty title
        [item(["b-ann"]), {"type": "x", "title": "no audience"}],
        [item(["b-ann"]), item(["b-ann"], data={"big": "x" * 20_000})],  # MAX_DATA_BYTES
        [item(["b-ann"], idempotency_key="k"), item(["b-bob"], idempotency_key="k")],
    ]
    for items in cases:
        status, answer = await post_batch(server, items)
        assert status == 422, answer
        locs = [d["loc"] for d in answer["error"]["details"]]
        assert all(loc[:2] == ["items", 1] for loc in locs), locs
    assert await inbox(server, "b-ann") == []
    assert await inbox(server, "b-bob") == []


async def test_batch_bounds_items_recipients_and_body_size(
    make_server: Callable[..., Awaitable[RunningServer]],
) -> None:
    server = await make_server(max_batch_items=3, max_batch_recipients=5)
    status, answer = await post_batch(server, [item([f"b-{i}"]) for i in range(4)])
    assert status == 422, answer
    assert answer["error"]["details"][0]["loc"] == ["items"]
    # 6 recipients in all, over three items: refused, nothing stored
    status, answer = await post_batch(server, [item(["b-1", "b-2"]) for _ in range(3)])
    assert status == 422, answer
    assert "6 recipients" in answer["error"]["message"]
    # the body limit is the single publish's (MAX_BODY_BYTES, 256 KiB by default)
    status, answer = await post_batch(server, [item(["b-1"], body="x" * 9000)] * 30)
    assert status == 413, answer
    assert await inbox(server, "b-1") == []
    status, answer = await post_batch(server, [item(["b-1", "b-2"]), item(["b-3", "b-4", "b-5"])])
    assert status == 201, answer


async def test_each_item_is_idempotent_by_its_own_key(server: RunningServer) -> None:
    items = [
        item(["b-ann"], "keyed", idempotency_key="order-1"),
        item(["b-ann"], "unkeyed"),
        item(["b-bob"], "keyed too", idempotency_key="order-2"),
    ]
    status, first = await post_batch(server, items)
    assert status == 201, first
    status, again = await post_batch(server, items)
    assert status == 201, again
    assert [r["status"] for r in again["results"]] == ["replayed", "created", "replayed"]
    for number in (0, 2):
        assert again["results"][number] == {**first["results"][number], "status": "replayed"}
    assert [n["title"] for n in await inbox(server, "b-ann")] == ["unkeyed", "unkeyed", "keyed"]
    # The keys are the single publish's: a single publish with one replays the batch's item...
    status, single = await server.request(
        "POST",
        "/api/v1/notifications",
        sub="publisher",
        scopes=(SCOPE_PUBLISH,),
        json=item(["b-bob"], "keyed too"),
        headers={"Idempotency-Key": "order-2"},
    )
    assert status == 201 and single["notifications"] == first["results"][2]["notifications"]
    # ...and a batch reusing a key for another item is a 409 that stores none of its items
    status, answer = await post_batch(
        server, [item(["b-cid"], "new"), item(["b-ann"], "changed", idempotency_key="order-1")]
    )
    assert status == 409, answer
    assert answer["error"]["details"] == {"item": 1, "idempotency_key": "order-1"}
    assert await inbox(server, "b-cid") == []


async def test_a_batch_is_delivered_after_its_commit_like_single_publishes(
    server: RunningServer,
) -> None:
    ann = await server.connect("b-ann")
    bob = await server.connect("b-bob")
    items = [item(["b-ann", "b-bob"], "one"), item(["b-ann"], "two", idempotency_key="d-1")]
    status, answer = await post_batch(server, items)
    assert status == 201, answer
    got = await ann.wait_for("notification", 2)
    assert [n["title"] for n in got] == ["one", "two"]
    assert (await ann.wait_for("unread_count"))[-1] == {"count": 2}
    assert [n["title"] for n in await bob.wait_for("notification")] == ["one"]
    assert (await bob.wait_for("unread_count"))[-1] == {"count": 1}
    stored = {n["id"] for r in answer["results"] for n in r["notifications"]}
    assert {n["id"] for n in ann.of("notification") + bob.of("notification")} == stored
    # A replayed item is not delivered again: only the new item reaches the client.
    status, answer = await post_batch(server, [items[1], item(["b-ann"], "three")])
    assert status == 201, answer
    await ann.wait_for("notification", 3)
    await bob.call("heartbeat")  # a round trip: anything in flight to ann has arrived too
    await ann.call("heartbeat")
    assert [n["title"] for n in ann.of("notification")] == ["one", "two", "three"]
    assert ann.of("unread_count")[-1] == {"count": 3}
