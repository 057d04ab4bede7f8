"""Hostile receipts: huge lists, non-integers, other users' seqs are refused or change nothing."""

from __future__ import annotations

from typing import Any

import pytest

from backend.schemas import MAX_ID

from ..conftest import RunningServer


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [1, 2],
        {},
        {"seqs": []},
        {"seqs": ["1"]},
        {"seqs": [1.5]},
        {"seqs": [True]},
        {"seqs": [-1]},
        {"seqs": [MAX_ID + 1]},
        {"seqs": [None]},
        {"seqs": 1},
        {"seqs": [1], "extra": 1},
    ],
)
async def test_a_malformed_receipt_is_refused_with_a_reason(
    server: RunningServer, payload: Any
) -> None:
    [item] = await server.publish(["alice"])
    client = await server.connect("alice")
    ack = await client.call("received", payload)
    assert ack["ok"] is False, ack
    assert ack["error"]["code"] in {"invalid_payload", "validation_error"}, ack
    status, body = await server.request("GET", f"/api/v1/notifications/{item['id']}", sub="alice")
    assert body["delivered_at"] is None


async def test_a_receipt_over_receipt_max_seqs_is_refused_on_both_doors(make_server: Any) -> None:
    server: RunningServer = await make_server(receipt_max_seqs=5)
    [item] = await server.publish(["alice"])
    client = await server.connect("alice")
    too_many = {"seqs": [item["seq"], *range(2, 7)]}
    ack = await client.call("received", too_many)
    assert ack["ok"] is False and "at most 5 seqs" in ack["error"]["message"]
    status, body = await server.request(
        "POST", "/api/v1/notifications/received", sub="alice", json=too_many
    )
    assert status == 422 and "at most 5 seqs" in body["error"]["message"]
    huge = {"seqs": list(range(1, 2001))}  # past the schema's hard bound (1000) too
    ack = await client.call("received", huge)
    assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload"
    status, document = await server.request("GET", "/api/v1/openapi.json")
    assert document["components"]["schemas"]["Receipt"]["properties"]["seqs"]["maxItems"] == 5
    _, body = await server.request("GET", f"/api/v1/notifications/{item['id']}", sub="alice")
    assert body["delivered_at"] is None
    assert await client.call("received", {"seqs": [item["seq"]]}) == {"ok": True, "delivered": 1}


async def test_a_receipt_only_ever_marks_the_callers_own_notifications(
    server: RunningServer,
) -> None:
    [alices] = await server.publish(["alice"])
    [bobs] = await server.publish(["bob"])
    assert alices["seq"] == bobs["seq"] == 1
    mallory = await server.connect("mallory")
    # Mallory names every seq Alice and Bob have: none of them is hers.
    ack = await mallory.call("received", {"seqs": [1, 2, 3, MAX_ID]})
    assert ack == {"ok": True, "delivered": 0}
    status, body = await server.request(
        "POST", "/api/v1/notifications/received", sub="mallory", json={"seqs": [1]}
    )
    assert (status, body) == (200, {"delivered": []})
    for user, item in (("alice", alices), ("bob", bobs)):
        _, body = await server.request("GET", f"/api/v1/notifications/{item['id']}", sub=user)
        assert body["delivered_at"] is None
    # Bob's own receipt for seq 1 marks his, never Alice's seq 1.
    bob = await server.connect("bob")
    assert await bob.call("received", {"seqs": [1]}) == {"ok": True, "delivered": 1}
    _, body = await server.request("GET", f"/api/v1/notifications/{alices['id']}", sub="alice")
    assert body["delivered_at"] is None
