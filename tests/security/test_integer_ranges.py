"""Integers past signed 64 bits (ids, cursors, seqs) are refused at the edge, never a 500."""

from __future__ import annotations

from typing import Any

import pytest

from ..conftest import SCOPE_ADMIN, RunningServer, refused_connect

BEYOND = 2**63  # one past the largest BIGINT
LARGEST = 2**63 - 1
LAST_SEQ_REFUSAL = "invalid last_seq: expected an integer from 0 to 9223372036854775807"


async def count_notifications(server: RunningServer, user: str) -> int:
    status, body = await server.request("GET", "/api/v1/notifications?limit=100", sub=user)
    assert status == 200, body
    return len(body["notifications"])


async def unread(server: RunningServer, user: str) -> int:
    status, body = await server.request("GET", "/api/v1/notifications/unread-count", sub=user)
    assert status == 200, body
    return int(body["count"])


@pytest.mark.parametrize(
    "body",
    [
        {"ids": [BEYOND]},
        {"ids": [1, 2**64]},
        {"ids": [10**30]},
        {"id": BEYOND},
        {"id": -(2**63) - 1},
    ],
)
async def test_mark_read_with_an_id_beyond_64_bits_is_422(
    server: RunningServer, body: dict[str, Any]
) -> None:
    await server.publish(["alice"])
    status, answer = await server.request(
        "POST", "/api/v1/notifications/read", sub="alice", json=body
    )
    assert status == 422, answer
    assert answer["error"]["code"] == "validation_error"
    assert await unread(server, "alice") == 1


async def test_mark_read_with_the_largest_id_is_not_found_not_an_error(
    server: RunningServer,
) -> None:
    status, answer = await server.request(
        "POST", "/api/v1/notifications/read", sub="alice", json={"ids": [LARGEST]}
    )
    assert status == 204, answer
    status, answer = await server.request(
        "POST", "/api/v1/notifications/read", sub="alice", json={"id": LARGEST}
    )
    assert status == 404, answer


@pytest.mark.parametrize("value", [str(BEYOND), "9999999999999999999", "1" * 40])
async def test_a_notifications_cursor_beyond_64_bits_is_422(
    server: RunningServer, value: str
) -> None:
    status, answer = await server.request(
        "GET", f"/api/v1/notifications?cursor={value}", sub="alice"
    )
    assert status == 422, answer
    assert answer["error"]["code"] == "validation_error"


async def test_the_largest_cursor_lists_from_the_newest(server: RunningServer) -> None:
    await server.publish(["alice"])
    status, answer = await server.request(
        "GET", f"/api/v1/notifications?cursor={LARGEST}", sub="alice"
    )
    assert status == 200, answer
    assert len(answer["notifications"]) == 1


@pytest.mark.parametrize("value", [str(BEYOND), "9999999999999999999"])
async def test_an_email_log_cursor_beyond_64_bits_is_422(server: RunningServer, value: str) -> None:
    status, answer = await server.request(
        "GET", f"/api/v1/admin/email-logs?cursor={value}", sub="ops", scopes=(SCOPE_ADMIN,)
    )
    assert status == 422, answer
    status, answer = await server.request(
        "GET", f"/api/v1/admin/email-logs?cursor={LARGEST}", sub="ops", scopes=(SCOPE_ADMIN,)
    )
    assert status == 200, answer


@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("GET", "/api/v1/notifications/{}"),
        ("POST", "/api/v1/notifications/{}/read"),
        ("DELETE", "/api/v1/notifications/{}"),
    ],
)
@pytest.mark.parametrize("value", [LARGEST, BEYOND, 10**30])
async def test_a_path_id_of_any_size_is_not_found(
    server: RunningServer, method: str, template: str, value: int
) -> None:
    status, answer = await server.request(method, template.format(value), sub="alice")
    assert status == 404, answer
    assert answer["error"]["code"] == "not_found"


async def test_retrying_an_email_log_id_beyond_64_bits_is_not_found(
    server: RunningServer,
) -> None:
    for value in (LARGEST, BEYOND):
        status, answer = await server.request(
            "POST",
            f"/api/v1/admin/email-logs/{value}/retry",
            sub="ops",
            scopes=(SCOPE_ADMIN,),
        )
        assert status == 404, answer


def test_the_openapi_document_states_the_id_bounds() -> None:
    from backend.schemas import ListQuery, MarkRead, MarkReadPayload, SyncPayload

    ids = MarkRead.model_json_schema()["properties"]["ids"]["anyOf"][0]["items"]
    assert ids["minimum"] == 1 and ids["maximum"] == LARGEST
    item = MarkReadPayload.model_json_schema()["properties"]["ids"]["items"]
    assert item["maximum"] == LARGEST
    assert SyncPayload.model_json_schema()["properties"]["after_seq"]["maximum"] == LARGEST
    cursor = ListQuery.model_json_schema()["properties"]["cursor"]["anyOf"][0]
    assert "pattern" in cursor


@pytest.mark.parametrize("ids", [[BEYOND], [1, 2**64], [10**30]])
async def test_socket_mark_read_with_an_id_beyond_64_bits_is_an_invalid_payload_ack(
    server: RunningServer, ids: list[int]
) -> None:
    await server.publish(["alice"])
    alice = await server.connect("alice")
    answer = await alice.call("mark_read", {"ids": ids})
    assert answer["ok"] is False
    assert answer["error"]["code"] == "invalid_payload", answer
    assert (await alice.call("mark_read", {"ids": [LARGEST]})) == {"ok": True, "ids": []}
    assert await unread(server, "alice") == 1


@pytest.mark.parametrize("after_seq", [BEYOND, 2**64, 10**30])
async def test_sync_after_a_seq_beyond_64_bits_is_an_invalid_payload_ack(
    server: RunningServer, after_seq: int
) -> None:
    alice = await server.connect("alice")
    answer = await alice.call("sync", {"after_seq": after_seq})
    assert answer["ok"] is False
    assert answer["error"]["code"] == "invalid_payload", answer
    # The session is not left held: a following sync works.
    assert (await alice.call("sync", {"after_seq": 0}))["ok"] is True


@pytest.mark.parametrize("last_seq", [BEYOND, 2**64, 10**30])
async def test_connecting_with_a_last_seq_beyond_64_bits_is_refused_with_a_reason(
    server: RunningServer, last_seq: int
) -> None:
    auth = {"token": server.token("alice"), "last_seq": last_seq}
    assert await refused_connect(server, auth) == [{"message": LAST_SEQ_REFUSAL}]
    again = await server.connect("alice", auth={"token": server.token("alice"), "last_seq": 0})
    [result] = await again.wait_for("recovery")
    assert result == {"recovered": True, "count": 0, "last_seq": 0}
