"""A restart (or a deploy) ends every session so that the official clients come back by
themselves with their `last_seq`: python-engineio's client never reconnects after an Engine.IO
CLOSE packet, so websockets are closed under the clients instead."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio

from ..conftest import RunningServer


async def test_a_python_client_reconnects_by_itself_after_a_restart_and_gets_what_it_missed(
    server: RunningServer,
) -> None:
    received: list[dict[str, Any]] = []
    connects = 0
    client = socketio.AsyncClient(reconnection=True, reconnection_delay=0.2)

    def on_notification(notification: dict[str, Any]) -> None:
        received.append(notification)

    def on_connect() -> None:
        nonlocal connects
        connects += 1

    client.on("notification", on_notification)
    client.on("connect", on_connect)

    def auth() -> dict[str, Any]:
        last_seq = max((n["seq"] for n in received), default=0)
        return {"token": server.token("alice"), "last_seq": last_seq}

    await client.connect(server.url, auth=auth, transports=["websocket"], wait_timeout=10)
    try:
        await server.publish(["alice"], title="before")
        async with asyncio.timeout(5):
            while len(received) < 1:
                await asyncio.sleep(0.05)

        await server.stop()
        await server.start()  # same port, same database
        await server.publish(["alice"], title="while away")  # nobody is connected yet

        async with asyncio.timeout(15):
            while connects < 2 or len(received) < 2:
                await asyncio.sleep(0.05)
        await server.publish(["alice"], title="after")
        async with asyncio.timeout(5):
            while len(received) < 3:
                await asyncio.sleep(0.05)
    finally:
        await client.disconnect()
    assert [n["title"] for n in received] == ["before", "while away", "after"]
    assert connects == 2
