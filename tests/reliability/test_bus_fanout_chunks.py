"""A fan-out across processes travels as one bus message per chunk of recipients, and still
reaches every client once, in order, when the bus is cut in the middle of it.

Each test has its own Redis and a PostgreSQL database (SQLite is one process).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis.asyncio as redis
from sqlalchemy import event

from backend import keys
from backend.config import ConfigError, load_settings
from backend.realtime.delivery import BUS_PREFIX, EACH_PREFIX

from ..conftest import TEST_SECRET, Recorder, RunningServer
from ..servers import RedisServer, start_redis

MakeServer = Callable[..., Awaitable[RunningServer]]
CHANNEL = "socketio"  # python-socketio's default channel, which ours keeps
on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def bus_redis() -> Iterator[RedisServer]:
    started = start_redis()
    try:
        yield started
    finally:
        started.stop()


async def metrics(server: RunningServer) -> str:
    async with server.http.get(server.url + "/metrics") as response:
        return await response.text()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def wait_all(clients: dict[str, list[Recorder]], created: dict[str, list[int]]) -> None:
    for user, recorders in clients.items():
        for recorder in recorders:
            await recorder.wait_for("notification", count=len(created[user]), timeout=20)
    await asyncio.sleep(0.5)  # a duplicate would come now


@on_postgresql
async def test_a_fan_out_across_three_processes_arrives_once_in_order_through_a_bus_cut(
    make_server: MakeServer, bus_redis: RedisServer
) -> None:
    servers = [await make_server(redis_url=bus_redis.url, bus_fanout_chunk=4) for _ in range(3)]
    users = [f"u{n}" for n in range(30)]
    clients: dict[str, list[Recorder]] = {user: [] for user in [*users, "everywhere"]}
    for index, user in enumerate(users):
        clients[user].append(await servers[index % 3].connect(user))
    for server in servers:  # one user with a session on every process
        clients["everywhere"].append(await server.connect("everywhere"))
    recipients = [*users, "everywhere"]
    created: dict[str, list[int]] = {user: [] for user in recipients}
    publisher = servers[0]  # one source, so every client's order is the seq order

    async def fan_out_in_order() -> None:
        notifications = await publisher.publish(recipients)
        for user, item in zip(recipients, notifications, strict=True):
            created[user].append(item["seq"])

    await fan_out_in_order()
    admin = redis.Redis.from_url(bus_redis.url)
    try:
        # The bus cut while fan-outs of 8 chunks each are being published: cut as soon as they
        # are sent (after a fixed pause, a fast publish path had them all done before the cut).
        running = asyncio.gather(*[fan_out_in_order() for _ in range(6)])
        await asyncio.sleep(0)
        killed = await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 3
        await running
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # every process subscribed and hearing again
            answers = [await server.request("GET", "/health/ready") for server in servers]
            if all(status == 200 for status, _ in answers):
                break
            await asyncio.sleep(0.2)
        await fan_out_in_order()
    finally:
        await admin.aclose()
    await wait_all(clients, created)
    for user, recorders in clients.items():
        for recorder in recorders:
            assert [n["seq"] for n in recorder.of("notification")] == sorted(created[user])
            assert recorder.client.connected
    caught_up = 0.0
    for server in servers[1:]:  # the cut landed: each receiving process subscribed again
        text = await metrics(server)
        assert metric(text, "notify_bus_subscribes_total") >= 2
        caught_up += metric(text, "notify_bus_catch_up_notifications_total")
    assert caught_up >= 1  # and in mid-fan-out: chunks were lost, and caught up from the database


@on_postgresql
async def test_a_fan_out_puts_one_bus_message_per_chunk_not_one_per_recipient(
    make_server: MakeServer, bus_redis: RedisServer
) -> None:
    a = await make_server(redis_url=bus_redis.url, bus_fanout_chunk=10)
    b = await make_server(redis_url=bus_redis.url, bus_fanout_chunk=10)
    users = [f"u{n}" for n in range(25)]
    on_b = {user: await b.connect(user) for user in users}
    listener = redis.Redis.from_url(bus_redis.url)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(CHANNEL)
    try:
        await a.publish(users)  # 25 recipients, each a notification and an unread_count
        for client in on_b.values():
            await client.wait_for("notification")
            await client.wait_for("unread_count")
        chunks = emits = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            message = await pubsub.get_message(timeout=0.1)
            if message is None:
                continue
            data = message["data"]
            if data.startswith(EACH_PREFIX):
                chunks += 1
            elif not data.startswith(BUS_PREFIX):  # canaries aside: python-socketio's emits
                emits += 1
    finally:
        await pubsub.aclose()
        await listener.aclose()
    assert (chunks, emits) == (3, 0)  # ceil(25 / 10) messages, not 50
    for client in on_b.values():
        assert len(client.of("notification")) == 1


@on_postgresql
async def test_connects_under_the_bus_take_their_catch_up_baseline_from_the_batched_upsert(
    make_server: MakeServer, bus_redis: RedisServer
) -> None:
    """A connect without last_seq needs the user's latest seq (where a bus gap catches it up
    from); it comes with the connects' shared user upsert, not a transaction per connect."""
    server = await make_server(redis_url=bus_redis.url)
    users = [f"u{n}" for n in range(60)]
    before = await server.publish(users[:1])  # u0 has a seq already: its baseline is 1
    transactions = 0

    def counted(*_args: object) -> None:
        nonlocal transactions
        transactions += 1

    engine = server.app[keys.ENGINE].sync_engine
    event.listen(engine, "begin", counted)
    try:
        clients = await asyncio.gather(*[server.connect(user) for user in users])
    finally:
        event.remove(engine, "begin", counted)
    assert transactions < len(users) / 2  # one per batch of connects (it was one per connect)
    sent = server.app[keys.DELIVERY].sent_seq
    first = clients[0].client.get_sid()
    assert first is not None and sent[first] == before[0]["seq"]
    assert sorted(sent.values()) == [0] * (len(users) - 1) + [before[0]["seq"]]


@on_postgresql
async def test_a_fan_out_chunk_that_cannot_be_read_makes_the_process_catch_up(
    make_server: MakeServer, bus_redis: RedisServer
) -> None:
    """Garbage (or a chunk from a newer format) on the channel never kills the listener; the
    process treats it as a gap: its sessions catch up from the database, then go on live."""
    a = await make_server(redis_url=bus_redis.url)
    b = await make_server(redis_url=bus_redis.url)
    on_b = await b.connect("alice")
    [first] = await a.publish(["alice"])
    await on_b.wait_for("notification")
    gaps = metric(await metrics(b), "notify_bus_gaps_total")
    sender = redis.Redis.from_url(bus_redis.url)
    try:
        await sender.publish(CHANNEL, EACH_PREFIX + b"someone\n{not json\n[]")
    finally:
        await sender.aclose()
    deadline = time.monotonic() + 5
    while metric(await metrics(b), "notify_bus_gaps_total") == gaps:
        assert time.monotonic() < deadline, "no gap after an unreadable chunk"
        await asyncio.sleep(0.1)
    [second] = await a.publish(["alice"])
    got = await on_b.wait_for("notification", count=2)
    await asyncio.sleep(0.3)
    assert [n["seq"] for n in on_b.of("notification")] == [first["seq"], second["seq"]]
    assert got[1]["id"] == second["id"]


def test_a_fan_out_chunk_out_of_range_is_refused() -> None:
    env = {"JWT_SECRET": TEST_SECRET}
    for bad in ("0", "100001"):
        with pytest.raises(ConfigError, match="BUS_FANOUT_CHUNK"):
            load_settings({**env, "BUS_FANOUT_CHUNK": bad})
    assert load_settings({**env, "BUS_FANOUT_CHUNK": "250"}).bus_fanout_chunk == 250
