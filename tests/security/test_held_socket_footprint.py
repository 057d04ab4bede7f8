"""What a held websocket costs at rest: no writer task waiting on its queue (a task, its frame and
its future each); one is started when something is queued and ends when the queue is empty."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from engineio import packet

from backend import keys

from ..conftest import RunningServer

SESSIONS = 5


async def settled_writers() -> list[asyncio.Task[object]]:
    """The writer tasks left once what is queued has been written (bounded wait)."""
    for _ in range(200):
        if not writer_tasks():
            break
        await asyncio.sleep(0.02)
    return writer_tasks()


def writer_tasks() -> list[asyncio.Task[object]]:
    names = ("LeanSocket._write_queued", "LeanSocket._write_loop")
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "") in names and not task.done()
    ]


async def test_a_held_websocket_has_no_writer_task_at_rest(server: RunningServer) -> None:
    recorders = [await server.connect(f"rest-{i}") for i in range(SESSIONS)]
    assert await settled_writers() == []
    # Queued packets (not direct writes) get a writer, which ends once they are written.
    sockets = list(server.app[keys.SIO].eio.sockets.values())
    assert len(sockets) == SESSIONS
    for sock in sockets:
        for _ in range(3):
            await sock.send(packet.Packet(packet.MESSAGE, '2["queued",1]'))
    for recorder in recorders:
        assert await recorder.wait_for("queued", count=3) == [1, 1, 1]
    assert await settled_writers() == []
    # A notification afterwards still arrives (written directly or through a new writer).
    await server.publish([f"rest-{i}" for i in range(SESSIONS)], title="after rest")
    for recorder in recorders:
        [note] = await recorder.wait_for("notification")
        assert note["title"] == "after rest"


def reader_frames() -> list[dict[str, object]]:
    """The locals of every LeanSocket reader, found down each task's chain of awaits."""
    found = []
    for task in asyncio.all_tasks():
        coro: object = task.get_coro()
        for _ in range(50):
            code = getattr(coro, "cr_code", None)
            if code is None:
                break
            frame = getattr(coro, "cr_frame", None)
            if code.co_qualname == "LeanSocket._websocket_handler" and frame is not None:
                found.append(dict(frame.f_locals))
            coro = getattr(coro, "cr_await", None)
    return found


async def test_a_held_websocket_keeps_no_copy_of_its_connect_packet(server: RunningServer) -> None:
    """The CONNECT frame carries the token: the reader lets it go once handled."""
    token = server.token("quiet")
    await server.connect("quiet", auth={"token": token})
    [frame] = reader_frames()
    held = [
        name
        for name, value in frame.items()
        if token in repr(value) or token in repr(getattr(value, "data", None))
    ]
    assert held == []


def held_chain() -> list[str]:
    """The coroutines awaited, outermost first, by the task that runs a held websocket."""
    for task in asyncio.all_tasks():
        chain, coro = [], task.get_coro()
        for _ in range(50):
            code = getattr(coro, "cr_code", None)
            if code is None:
                break
            chain.append(code.co_qualname)
            coro = getattr(coro, "cr_await", None)
        if "LeanSocket._websocket_handler" in chain:
            return chain
    return []


async def test_a_held_websocket_runs_under_no_frame_of_our_middlewares_or_guard(
    server: RunningServer,
) -> None:
    """Each frame under a held socket is kept for its life: only aiohttp's, python-engineio's
    and the session's own."""
    await server.connect("deep")
    chain = held_chain()
    assert chain[-2:] == ["LeanSocket._websocket_handler", "WebSocketResponse.receive"]
    ours = [name for name in chain if name.split(".")[0] in OUR_WRAPPERS]
    assert ours == []
    assert len(chain) <= MAX_HELD_FRAMES, chain


# Our middlewares and the Engine.IO guard: nothing of theirs is needed once a socket is upgraded.
OUR_WRAPPERS = {
    "access_middleware",
    "_access",
    "error_middleware",
    "body_deadline",
    "GuardedEngine",
}
MAX_HELD_FRAMES = 10


async def test_a_connect_is_answered_without_starting_a_writer_task(server: RunningServer) -> None:
    """The OPEN packet, queued before the websocket upgrade, is written by the session itself;
    the CONNECT answer goes straight to the idle websocket: no writer task for either."""
    loop = asyncio.get_running_loop()
    started: list[str] = []
    previous = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        started.append(getattr(coro, "__qualname__", ""))
        if previous is not None:
            return previous(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    try:
        recorders = [await server.connect(f"answered-{i}") for i in range(SESSIONS)]
    finally:
        loop.set_task_factory(previous)
    assert "LeanSocket._write_queued" not in started
    await server.publish([f"answered-{i}" for i in range(SESSIONS)], title="still delivered")
    for recorder in recorders:
        [note] = await recorder.wait_for("notification")
        assert note["title"] == "still delivered"


async def test_a_held_websocket_keeps_no_http_parser_pipelining_queue_or_answer_headers(
    server: RunningServer,
) -> None:
    """aiohttp's connection drops its HTTP state once it carries a websocket (fast.py)."""
    recorder = await server.connect("shed")
    sio = server.app[keys.SIO]
    [sid] = list(sio.eio.sockets)
    protocol: Any = sio.environ[sid]["aiohttp.request"].protocol
    assert protocol._parser is None
    assert not protocol._messages and not isinstance(protocol._messages, deque)
    assert not sio.eio.sockets[sid].lean_ws._sock.headers  # the 101's, sent long ago
    # The websocket still works both ways.
    assert (await recorder.call("heartbeat"))["ok"] is True
    await server.publish(["shed"], title="after shedding")
    [note] = await recorder.wait_for("notification")
    assert note["title"] == "after shedding"


async def test_a_closed_session_waiting_for_its_ping_turn_keeps_no_websocket(
    server: RunningServer,
) -> None:
    """The pings' DueQueue names a session until its turn comes, after a close too."""
    recorder = await server.connect("gone")
    sio = server.app[keys.SIO]
    [sock] = list(sio.eio.sockets.values())
    assert sock.lean_ws is not None
    await recorder.client.disconnect()
    for _ in range(200):
        if sock.closed and sock.lean_ws is None:
            break
        await asyncio.sleep(0.02)
    assert sock.closed and sock.lean_ws is None
    assert getattr(sock, "direct_ws", None) is None
