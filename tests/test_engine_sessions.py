"""Engine.IO sessions (backend/realtime/engine.py): pings, ping timeouts and upgrades, over the wire.

The suite's server pings every 2 s and waits 2 s for the answer.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from backend import keys
from backend.realtime.engine import LeanSocket

from .conftest import RunningServer

WEBSOCKET_PATH = "/socket.io/?EIO=4&transport=websocket"


async def open_session(server: RunningServer, sub: str) -> aiohttp.ClientWebSocketResponse:
    """A raw Engine.IO v4 websocket, connected to namespace / with a token."""
    ws = await server.http.ws_connect(server.url + WEBSOCKET_PATH)
    opening = await ws.receive_str()
    assert opening.startswith("0{")
    await ws.send_str("40" + json.dumps({"token": server.token(sub)}))
    connected = await ws.receive_str()
    assert connected.startswith("40{"), connected
    return ws


async def test_a_client_answering_pings_stays_connected_past_interval_plus_timeout(
    server: RunningServer,
) -> None:
    ws = await open_session(server, "alice")
    pings = 0
    deadline = time.monotonic() + 6.5  # beyond 2 s interval + 2 s timeout
    async with asyncio.timeout(10):
        while time.monotonic() < deadline:
            try:
                msg = await asyncio.wait_for(ws.receive(), deadline - time.monotonic())
            except TimeoutError:
                break
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            if msg.data == "2":
                pings += 1
                await ws.send_str("3")
    assert pings >= 2
    assert not ws.closed
    [session] = server.app[keys.CONNECTIONS].user_sessions("alice")
    eio_socket = server.app[keys.SIO].eio.sockets[
        server.app[keys.SIO].manager.eio_sid_from_sid(session.sid, "/")
    ]
    assert isinstance(eio_socket, LeanSocket) and eio_socket.lean
    # Still served: an event gets its ack.
    await ws.send_str('421["heartbeat"]')
    async with asyncio.timeout(5):
        while True:
            answer = await ws.receive_str()
            if answer.startswith("431"):
                break
    await ws.close()


async def test_a_client_that_stops_answering_pings_is_closed_and_forgotten(
    server: RunningServer,
) -> None:
    ws = await open_session(server, "alice")
    assert len(server.app[keys.CONNECTIONS].user_sessions("alice")) == 1
    frames: list[str] = []
    async with asyncio.timeout(12):  # ping at 2 s, no answer: closed soon after 4 s
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                frames.append(msg.data)
    assert ws.closed
    assert frames and frames[0] == "2"  # it was pinged, and did not answer
    async with asyncio.timeout(5):
        while server.app[keys.CONNECTIONS].user_sessions("alice"):
            await asyncio.sleep(0.05)
    assert not server.app[keys.SIO].eio.sockets or all(
        s.closed for s in server.app[keys.SIO].eio.sockets.values()
    )


async def test_a_malformed_engineio_packet_closes_only_that_session(server: RunningServer) -> None:
    bad = await open_session(server, "mallory")
    good = await server.connect("alice")
    await bad.send_str("x-not-a-packet")
    async with asyncio.timeout(5):
        async for _msg in bad:
            pass
    assert bad.closed
    [created] = await server.publish(["alice"])
    [pushed] = await good.wait_for("notification")
    assert pushed == created


async def test_a_session_upgraded_from_polling_gets_pings_and_notifications(
    server: RunningServer,
) -> None:
    alice = await server.connect("alice", transports=["polling", "websocket"])
    async with asyncio.timeout(5):
        while alice.client.transport() != "websocket":
            await asyncio.sleep(0.05)
    await asyncio.sleep(5)  # past interval + timeout: pings through the queue kept it open
    assert alice.client.connected
    [created] = await server.publish(["alice"])
    [pushed] = await alice.wait_for("notification")
    assert pushed == created
