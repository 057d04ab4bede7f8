"""Server-Sent Events (issue 13, item 3): the same delivery path as a socket session, read by a
raw aiohttp client (and curl -N) from a real server."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from backend.config import Secret
from backend.realtime.sse import SseStream
from backend.security import SCOPE_ADMIN

from .conftest import RunningServer
from .servers import RedisServer
from .sse_client import SseReader, open_stream

MakeServer = Callable[..., Awaitable[RunningServer]]
STREAM = "/api/v1/notifications/stream"
TICKET = "/api/v1/notifications/stream-ticket"


@pytest.fixture
async def readers() -> AsyncIterator[list[SseReader]]:
    opened: list[SseReader] = []
    yield opened
    for reader in opened:
        await reader.close()


async def stream_of(
    server: RunningServer, sub: str, readers: list[SseReader], **kwargs: Any
) -> SseReader:
    headers = {**server.auth(sub), **kwargs.pop("headers", {})}
    reader = await open_stream(server.http, server.url, headers=headers, **kwargs)
    readers.append(reader)
    return reader


async def ticket_for(server: RunningServer, sub: str) -> str:
    status, body = await server.request("POST", TICKET, sub=sub)
    assert status == 201, body
    return str(body["ticket"])


async def test_a_published_notification_arrives_with_its_seq_as_the_event_id(
    server: RunningServer, readers: list[SseReader]
) -> None:
    reader = await stream_of(server, "alice", readers)
    [created] = await server.publish(["alice"], title="Hi")
    [event] = await reader.wait_for("notification")
    assert event["id"] == str(created["seq"])
    assert event["data"] == created
    [count] = await reader.wait_for("unread_count")
    assert count["data"] == {"count": 1}
    status, _ = await server.request("POST", "/api/v1/notifications/read-all", sub="alice")
    assert status == 204
    [read] = await reader.wait_for("notifications_read")
    assert read["data"] == {"ids": [created["id"]]}
    await reader.wait_for("unread_count", 2)
    assert reader.of("unread_count")[-1]["data"] == {"count": 0}
    status, mine = await server.request(
        "GET", "/api/v1/notifications/websocket/status", sub="alice"
    )
    assert status == 200 and mine["online"] is True
    assert [s["transport"] for s in mine["sessions"]] == ["sse"]
    assert mine["sessions"][0]["rooms"] == ["user:alice"]


async def test_a_ping_comment_is_written_every_heartbeat(
    make_server: MakeServer, readers: list[SseReader]
) -> None:
    server = await make_server(sse_heartbeat_seconds=0.2)
    reader = await stream_of(server, "alice", readers)
    await reader.wait_comments("ping", 3)
    assert not reader.ended


async def test_a_ticket_opens_one_stream_once_and_expires(
    make_server: MakeServer, readers: list[SseReader]
) -> None:
    server = await make_server(sse_ticket_ttl_seconds=1)
    ticket = await ticket_for(server, "alice")
    reader = await open_stream(server.http, server.url, params={"ticket": ticket})
    readers.append(reader)
    [created] = await server.publish(["alice"])
    assert (await reader.wait_for("notification"))[0]["data"] == created
    status, body = await server.request("GET", STREAM, params={"ticket": ticket})
    assert status == 401 and "ticket" in body["error"]["message"]
    late = await ticket_for(server, "alice")
    await asyncio.sleep(1.3)
    status, body = await server.request("GET", STREAM, params={"ticket": late})
    assert status == 401
    status, _ = await server.request("GET", STREAM)
    assert status == 401
    status, _ = await server.request("POST", TICKET)
    assert status == 401


async def test_last_event_id_resumes_each_missed_notification_once_in_order_then_live(
    server: RunningServer, readers: list[SseReader]
) -> None:
    created = [(await server.publish(["alice"], title=f"n{i}"))[0] for i in range(5)]
    after = created[1]["seq"]
    reader = await stream_of(server, "alice", readers, headers={"Last-Event-ID": str(after)})
    # Published while the recovery may still run: held, then sent once, in order.
    created += [(await server.publish(["alice"], title=f"n{i}"))[0] for i in range(5, 7)]
    [recovery] = await reader.wait_for("recovery")
    assert recovery["data"]["recovered"] is True
    created.append((await server.publish(["alice"], title="live"))[0])
    events = await reader.wait_for("notification", 6)
    await asyncio.sleep(0.2)  # anything sent twice would be here by now
    got = [int(e["id"]) for e in reader.of("notification")]
    assert got == [n["seq"] for n in created[2:]]
    # The same through the query, for clients that cannot set the header.
    again = await stream_of(server, "alice", readers, params={"last_event_id": str(after)})
    await again.wait_for("recovery")
    assert [e["data"]["seq"] for e in again.of("notification")] == got
    assert events[0]["data"] == created[2]


async def test_a_bad_last_event_id_is_422(server: RunningServer) -> None:
    for headers in ({"Last-Event-ID": "x"}, {"Last-Event-ID": "-1"}):
        status, body = await server.request("GET", STREAM, sub="alice", headers=headers)
        assert status == 422, body


async def test_the_oldest_stream_is_closed_beyond_sse_max_streams_per_user(
    make_server: MakeServer, readers: list[SseReader]
) -> None:
    server = await make_server(sse_max_streams_per_user=2, max_connections_per_user=1)
    first = await stream_of(server, "alice", readers)
    second = await stream_of(server, "alice", readers)
    socket = await server.connect("alice")  # sockets have their own cap: it displaces no stream
    third = await stream_of(server, "alice", readers)
    [closed] = await first.wait_for("session_closed")
    assert "too many streams" in closed["data"]["reason"]
    await first.wait_end()
    [created] = await server.publish(["alice"])
    for reader in (second, third):
        assert (await reader.wait_for("notification"))[0]["data"] == created
    await socket.wait_for("notification")
    assert not first.of("notification")
    _, mine = await server.request("GET", "/api/v1/notifications/websocket/status", sub="alice")
    transports = sorted(s["transport"] for s in mine["sessions"])
    assert transports == ["sse", "sse", "websocket"]


async def test_notifications_over_the_outbound_rate_are_coalesced_into_missed(
    make_server: MakeServer, readers: list[SseReader]
) -> None:
    server = await make_server(outbound_rate_per_second=2)
    reader = await stream_of(server, "alice", readers)
    published = 8
    body = {"user_ids": ["alice"], "type": "t", "title": "burst"}
    for _ in range(published):
        status, _ = await server.request(
            "POST", "/api/v1/notifications", sub="p", scopes=("notifications:publish",), json=body
        )
        assert status == 201

    def missed() -> int:
        return sum(e["data"].get("missed", 0) for e in reader.of("unread_count"))

    async with asyncio.timeout(10):
        while len(reader.of("notification")) + missed() < published:
            await reader.wait_for("unread_count", len(reader.of("unread_count")) + 1)
    assert missed() > 0
    assert len(reader.of("notification")) + missed() == published
    flushed = [e["data"] for e in reader.of("unread_count") if "missed" in e["data"]]
    assert flushed[-1]["count"] == published


def test_a_reader_too_far_behind_is_dropped_rather_than_buffered() -> None:
    stream = SseStream("sse-x", "alice", max_queued=3)
    stream.send([("notification", {"seq": 1}), ("unread_count", {"count": 1})])
    assert stream.closed is None
    stream.send([("notification", {"seq": 2}), ("unread_count", {"count": 2})])
    assert stream.closed is not None and "behind" in stream.closed
    stream.send([("notification", {"seq": 3})])  # a closed stream takes nothing more


async def test_stale_cleanup_and_shutdown_end_streams(
    server: RunningServer, readers: list[SseReader]
) -> None:
    stale = await stream_of(server, "alice", readers)
    status, answer = await server.request(
        "POST", "/api/v1/notifications/websocket/cleanup", sub="op", scopes=(SCOPE_ADMIN,),
        params={"timeout_seconds": "0"},
    )  # fmt: skip
    assert status == 200 and answer["cleaned"] == 1
    await stale.wait_end()
    live = await stream_of(server, "alice", readers)
    async with asyncio.timeout(10):  # without closing them, aiohttp would wait a minute
        await server.stop()
    await live.wait_end()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_streams_and_tickets_work_across_processes_with_redis(
    make_server: MakeServer, redis_server: RedisServer, readers: list[SseReader]
) -> None:
    a = await make_server(redis_url=redis_server.url)
    b = await make_server(redis_url=redis_server.url)
    ticket = await ticket_for(a, "alice")
    on_b = await open_stream(b.http, b.url, params={"ticket": ticket})
    readers.append(on_b)
    status, _ = await a.request("GET", STREAM, params={"ticket": ticket})
    assert status == 401  # claimed on b: no process takes it again
    await asyncio.sleep(0.3)  # both managers subscribed to the channel
    [created] = await a.publish(["alice"])
    [event] = await on_b.wait_for("notification")
    assert event["data"] == created and event["id"] == str(created["seq"])
    await on_b.wait_for("unread_count")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_reads_the_stream(server: RunningServer) -> None:
    process = await asyncio.create_subprocess_exec(
        "curl", "-N", "-s", "-H", f"Authorization: Bearer {server.token('alice')}",
        server.url + STREAM, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        assert await asyncio.wait_for(process.stdout.readline(), 10) == b": stream open\n"
        assert await asyncio.wait_for(process.stdout.readline(), 10) == b"\n"
        [created] = await server.publish(["alice"])
        lines = [await asyncio.wait_for(process.stdout.readline(), 10) for _ in range(3)]
        assert lines[0] == b"event: notification\n"
        assert lines[1] == f"id: {created['seq']}\n".encode()
        assert lines[2].startswith(b"data: {")
    finally:
        process.kill()
        await process.wait()


async def test_the_admin_ui_lists_sockets_while_a_stream_is_open(
    make_server: MakeServer, readers: list[SseReader]
) -> None:
    import socketio

    server = await make_server(admin_ui_username="admin", admin_ui_password=Secret("pw"))
    await stream_of(server, "alice", readers)
    admin = socketio.AsyncClient(reconnection=False)
    listed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    admin.on("all_sockets", lambda sockets: listed.set_result(sockets), namespace="/admin")
    try:
        await admin.connect(
            server.url, namespaces=["/admin"], auth={"username": "admin", "password": "pw"},
            transports=["websocket"], wait_timeout=10,
        )  # fmt: skip
        sockets = await asyncio.wait_for(listed, 10)
    finally:
        await admin.disconnect()
    assert [s["transport"] for s in sockets if s["nsp"] == "/"] == ["sse"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_streams_never_displace_sockets_in_the_cluster_cap(
    make_server: MakeServer, redis_server: RedisServer, readers: list[SseReader]
) -> None:
    """The cluster-wide cap counts sockets; streams have their own per-process cap."""
    a = await make_server(redis_url=redis_server.url, max_connections_per_user=2)
    b = await make_server(redis_url=redis_server.url, max_connections_per_user=2)
    sockets = [await a.connect("alice"), await b.connect("alice")]
    streams = [await stream_of(server, "alice", readers) for server in (a, b, a)]
    [created] = await a.publish(["alice"])
    for stream in streams:
        [event] = await stream.wait_for("notification")
        assert event["data"] == created
    for socket in sockets:
        await socket.wait_for("notification")
        assert socket.client.connected and not socket.of("session_closed")
    status, body = await b.request("GET", "/api/v1/notifications/websocket/status", sub="alice")
    assert status == 200, body
    assert body["connections"] == 5  # two sockets and three streams, on either process
