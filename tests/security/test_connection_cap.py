"""The per-user connection cap holds under any interleaving of concurrent connects."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp

from backend import keys

from ..conftest import RunningServer
from .raw_socket import RawSocket

MakeServer = Callable[..., Awaitable[RunningServer]]
WAVES = 4
WAVE_SIZE = 50  # 200 connects in all, each wave at once


def live_sessions(server: RunningServer, user: str) -> int:
    """Socket.IO sessions of `user` that a notification to the user would reach."""
    participants = server.app[keys.SIO].manager.get_participants("/", f"user:{user}")
    return sum(1 for _ in participants)


def connected_sessions(server: RunningServer) -> int:
    manager = server.app[keys.SIO].manager
    return sum(
        1 for sid, _ in manager.get_participants("/", None) if manager.is_connected(sid, "/")
    )


async def test_concurrent_connects_with_one_token_leave_at_most_the_cap(
    make_server: MakeServer,
) -> None:
    cap = 5
    # Long pings: a session must not disappear by timing out, only by the cap.
    server = await make_server(
        max_connections_per_user=cap, ping_interval_seconds=25, ping_timeout_seconds=20
    )
    token = server.token("alice")
    sockets: list[RawSocket] = []
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    try:
        for _ in range(WAVES):
            wave = await asyncio.gather(*(RawSocket.open(server, http) for _ in range(WAVE_SIZE)))
            sockets += wave
            await asyncio.gather(*(sock.connect(token) for sock in wave))
            assert live_sessions(server, "alice") <= cap
            assert len(server.app[keys.CONNECTIONS].user_sessions("alice")) <= cap
        async with asyncio.timeout(10):  # the displaced are told, then disconnected
            while connected_sessions(server) > cap:
                await asyncio.sleep(0.05)
        assert live_sessions(server, "alice") == cap

        await server.publish(["alice"])
        received = await asyncio.gather(*(sock.events("notification", 1.5) for sock in sockets))
        reached = sum(1 for events in received if events)
        assert 1 <= reached <= cap
        # the newest connect always gets in: the user's current device works
        assert received[-1]
    finally:
        await asyncio.gather(*(sock.close() for sock in sockets), return_exceptions=True)
        await http.close()
