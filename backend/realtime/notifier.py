"""The one narrow door from services to sockets: emit to a user, a room, or everyone."""

from __future__ import annotations

from typing import Any

import socketio


def user_room(user_id: str) -> str:
    return f"user:{user_id}"


class Notifier:
    """Owns no state of its own; it only knows how to reach rooms through the AsyncServer."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self._sio = sio

    async def emit_to_user(self, user_id: str, event: str, data: Any) -> None:
        await self._sio.emit(event, data, room=user_room(user_id))

    async def emit_to_users(self, items: list[tuple[str, list[tuple[str, Any]]]]) -> None:
        """Many users, each with its own list of (event, data), in one pass."""
        rooms = [(user_room(user_id), messages) for user_id, messages in items]
        await self._sio.manager.emit_each(rooms, "/")

    async def emit_to_room(self, room: str, event: str, data: Any) -> None:
        await self._sio.emit(event, data, room=room)

    async def emit_to_all(self, event: str, data: Any) -> None:
        await self._sio.emit(event, data)

    async def emit_to_session(self, sid: str, event: str, data: Any) -> None:
        await self._sio.emit(event, data, to=sid)

    async def emit_to_local_session(self, sid: str, event: str, data: Any) -> None:
        """Straight to a session of this process, in order, bypassing the message queue."""
        await self._sio.manager.emit(event, data, namespace="/", room=sid, ignore_queue=True)

    async def emit_many_to_local_session(self, sid: str, messages: list[tuple[str, Any]]) -> None:
        """Several events to a session of this process, in order, in one write if it can."""
        await self._sio.manager.deliver_local(sid, messages, "/")

    async def broadcast_to_room(self, room: str, event: str, data: Any) -> None:
        """An ephemeral event to a room: not stored, not recovered."""
        await self._sio.emit(event, data, room=room)
