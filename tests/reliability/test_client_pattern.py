"""The documented client pattern (docs/examples/client.py) against a real server: a burst over
the outbound limit, seq holes and reconnects end with every notification exactly once."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import socketio

from ..conftest import RunningServer

MakeServer = Callable[..., Awaitable[RunningServer]]
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "client.py"
BURST = 60


def load_example() -> ModuleType:
    """The file the README links to, run as people run it: not a copy kept for the tests."""
    spec = importlib.util.spec_from_file_location("notification_client_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def publish_burst(server: RunningServer, user: str) -> dict[int, str]:
    """BURST notifications at once; returns their titles by seq."""
    answers = await asyncio.gather(
        *(server.publish([user], title=f"burst {i}") for i in range(BURST))
    )
    return {n["seq"]: n["title"] for [n] in answers}


def syncs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("sync after")]


async def test_example_client_gets_a_burst_over_the_outbound_limit_once_each(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="notification_client")
    server = await make_server(outbound_rate_per_second=5.0)
    got: list[dict[str, Any]] = []
    client = load_example().NotificationClient(
        server.url, server.token("alice"), on_notification=got.append
    )
    await client.connect()
    try:
        await wait_until(lambda: not client._syncing)  # the connect's recovery is over
        published = await publish_burst(server, "alice")
        await wait_until(lambda: len(got) >= BURST and not client._syncing)
        await asyncio.sleep(0.5)  # anything sent twice would have arrived by now
    finally:
        await client.close()
    assert sorted(n["seq"] for n in got) == list(range(1, BURST + 1))  # each once
    assert {n["seq"]: n["title"] for n in got} == published
    assert client.last_seq == BURST
    # The limit did cut the burst short: what was dropped came back through sync.
    assert syncs(caplog)


async def test_the_old_readme_pattern_without_sync_loses_most_of_a_burst(
    make_server: MakeServer,
) -> None:
    """Why the example syncs: the pattern the README used to show keeps last_seq but never
    calls sync, so whatever the outbound limit drops is only counted in `missed`."""
    server = await make_server(outbound_rate_per_second=5.0)
    sio = socketio.AsyncClient(reconnection=False)
    last_seq = 0
    received: list[int] = []
    missed: list[int] = []
    recovered = asyncio.Event()

    @sio.on("notification")
    async def on_notification(n: dict[str, Any]) -> None:
        nonlocal last_seq
        last_seq = max(last_seq, n["seq"])
        received.append(n["seq"])

    @sio.on("recovery")
    async def on_recovery(_result: dict[str, Any]) -> None:
        recovered.set()

    @sio.on("unread_count")
    async def on_unread_count(data: dict[str, Any]) -> None:
        missed.append(data.get("missed", 0))

    await sio.connect(
        server.url, auth=lambda: {"token": server.token("bob"), "last_seq": last_seq},
        transports=["websocket"],
    )  # fmt: skip
    try:
        async with asyncio.timeout(10):
            await recovered.wait()  # the connect's recovery no longer holds live notifications
        await publish_burst(server, "bob")
        await wait_until(lambda: len(received) + sum(missed) == BURST)
        await asyncio.sleep(0.5)
    finally:
        await sio.disconnect()
    assert len(received) < BURST
    assert len(received) + sum(missed) == BURST  # the rest was only ever counted


async def test_a_seq_hole_nothing_can_fill_costs_one_sync_not_a_loop(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="notification_client")
    status, _ = await server.request(
        "PUT", "/api/v1/preferences", sub="carol",
        json={"type_settings": {"muted": {"in_app": False}}},
    )  # fmt: skip
    assert status == 200
    got: list[dict[str, Any]] = []
    client = load_example().NotificationClient(
        server.url, server.token("carol"), on_notification=got.append
    )
    await client.connect()
    try:
        await wait_until(lambda: not client._syncing)
        await server.publish(["carol"], title="one")  # seq 1
        await server.publish(["carol"], type="muted", title="muted")  # seq 2: stored, not shown
        await server.publish(["carol"], title="three")  # seq 3: a gap after 1
        await wait_until(lambda: len(got) == 2 and client.last_seq == 3 and not client._syncing)
        await server.publish(["carol"], title="four")
        await wait_until(lambda: len(got) == 3)
        await asyncio.sleep(0.5)
    finally:
        await client.close()
    assert [n["title"] for n in got] == ["one", "three", "four"]
    assert syncs(caplog) == ["sync after 1 (seq gap)"]
    assert client.last_seq == 4


async def test_a_reconnect_replays_from_last_seq_and_a_fresh_client_starts_from_now(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    publisher = await make_server()  # a second process on the same database
    for title in ("old 1", "old 2"):
        await server.publish(["dave"], title=title)
    got: list[str] = []
    client = load_example().NotificationClient(
        server.url, server.token("dave"), on_notification=lambda n: got.append(n["title"])
    )
    await client.connect()
    try:
        assert client.last_seq == 2  # from the REST inbox: the history is not replayed
        await server.publish(["dave"], title="live")
        await wait_until(lambda: got == ["live"])
        await server.stop()
        await wait_until(lambda: not client.sio.connected, timeout=5)
        await publisher.publish(["dave"], title="while away")
        await server.start()  # the client reconnects by itself, with last_seq 3
        await wait_until(lambda: got == ["live", "while away"] and not client._syncing)
        await asyncio.sleep(0.5)
    finally:
        await client.close()
    assert got == ["live", "while away"]
    assert client.last_seq == 4


async def test_the_documented_client_acknowledges_what_it_received(server: RunningServer) -> None:
    got: list[dict[str, Any]] = []
    client = load_example().NotificationClient(
        server.url, server.token("hana"), on_notification=got.append
    )
    await client.connect()
    try:
        published = [(await server.publish(["hana"], title=f"#{n}"))[0] for n in range(3)]
        await wait_until(lambda: len(got) == 3)
        delivered: list[Any] = []

        async def all_delivered() -> bool:
            status, page = await server.request("GET", "/api/v1/notifications", sub="hana")
            delivered[:] = [n["delivered_at"] for n in page["notifications"]]
            return status == 200 and None not in delivered

        async with asyncio.timeout(10):
            while not await all_delivered():
                await asyncio.sleep(0.05)
        assert len(delivered) == len(published)
    finally:
        await client.close()
