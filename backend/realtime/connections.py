"""ConnectionManager: who is connected on this process, in which rooms, and since when."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

Clock = Callable[[], float]
SSE = "sse"  # the transport of a Server-Sent Events stream
USER_PREFIX = "user:"  # a user's own room, which each of its sessions is in


# running counters, in the order stats() answers them
COUNTED = ("events_in", "events_out", "total_connections", "uptime_seconds")


class Mirror(Protocol):
    """Told of every change, synchronously and in order (the cluster view in Redis)."""

    def added(self, connection: ClientConnection) -> None: ...
    def removed(self, connection: ClientConnection) -> None: ...
    def changed(self, connection: ClientConnection) -> None: ...
    def touched(self, connection: ClientConnection) -> None: ...


@dataclass(slots=True)
class ClientConnection:
    """One Socket.IO session: many per user (tabs, devices) is normal."""

    sid: str
    user_id: str
    connected_at: float
    last_heartbeat: float
    transport: str = "polling"
    remote_address: str | None = None
    user_agent: str | None = None
    # The rooms joined besides the user's own, which every session is in (a tuple: a set was
    # 216 bytes of every held connection, and a session joins a few topics at most).
    topics: tuple[str, ...] = ()
    events_in: int = 0
    events_out: int = 0
    order: int = 0  # admission order on this process: ties of connected_at broken
    live: bool = True  # False while its connect handler still runs (see admit)

    @property
    def rooms(self) -> set[str]:
        return {USER_PREFIX + self.user_id, *self.topics}

    def as_dict(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "user_id": self.user_id,
            "connected_at": self.connected_at,
            "last_heartbeat": self.last_heartbeat,
            "transport": self.transport,
            "remote_address": self.remote_address,
            "user_agent": self.user_agent,
            "rooms": sorted(self.rooms),
        }


class ConnectionManager:
    """An in-memory registry per process; the Socket.IO server owns delivery, this owns facts."""

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._connections: dict[str, ClientConnection] = {}
        # A user's sessions, which are also the members of the user's own room.
        self._by_user: dict[str, set[str]] = {}
        # The members of every other room (topics): each session's user room is not kept here
        # again (a set and a string of every held connection).
        self._rooms: dict[str, set[str]] = {}
        self.started_at = clock()
        self.events_in = 0
        self.events_out = 0
        self.total_connections = 0
        self.mirror: Mirror | None = None

    def connect(
        self,
        sid: str,
        user_id: str,
        *,
        transport: str = "polling",
        remote_address: str | None = None,
        user_agent: str | None = None,
    ) -> ClientConnection:
        connection = self._register(
            sid, user_id, transport=transport, remote_address=remote_address, user_agent=user_agent
        )
        if self.mirror is not None:
            self.mirror.added(connection)
        return connection

    def _register(
        self,
        sid: str,
        user_id: str,
        *,
        transport: str = "polling",
        remote_address: str | None = None,
        user_agent: str | None = None,
    ) -> ClientConnection:
        now = self._clock()
        connection = ClientConnection(
            sid=sid,
            user_id=user_id,
            connected_at=now,
            last_heartbeat=now,
            transport=transport,
            remote_address=remote_address,
            user_agent=user_agent,
        )
        self.total_connections += 1
        connection.order = self.total_connections
        self._connections[sid] = connection
        self._by_user.setdefault(user_id, set()).add(sid)
        return connection

    def admit(
        self, sid: str, user_id: str, *, limit: int, **details: Any
    ) -> list[ClientConnection]:
        """Register a connecting session (not yet live) and take out the user's oldest sessions
        beyond `limit`, returning them.

        Counting and registering with no await in between is what makes the cap hold however
        many connects of one user interleave: each one sees every other that came before it.
        """
        connection = self._register(sid, user_id, **details)
        connection.live = False
        # Sockets and Server-Sent Events streams have caps of their own: neither displaces the
        # other.
        sse = connection.transport == SSE
        sids = {s for s in self._by_user[user_id] if (self._connections[s].transport == SSE) == sse}
        displaced: list[ClientConnection] = []
        while len(sids) > limit:
            oldest = min((self._connections[s] for s in sids), key=lambda c: c.order)
            self.disconnect(oldest.sid)
            sids.discard(oldest.sid)
            displaced.append(oldest)
        # After the local trim, so the cluster's cap never counts what this process dropped.
        if self.mirror is not None:
            self.mirror.added(connection)
        return displaced

    def disconnect(self, sid: str) -> ClientConnection | None:
        connection = self._connections.pop(sid, None)
        if connection is None:
            return None
        for room in connection.topics:
            members = self._rooms.get(room)
            if members is not None:
                members.discard(sid)
                if not members:
                    del self._rooms[room]
        sids = self._by_user.get(connection.user_id)
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self._by_user[connection.user_id]
        if self.mirror is not None:
            self.mirror.removed(connection)
        return connection

    def get(self, sid: str) -> ClientConnection | None:
        return self._connections.get(sid)

    def join(self, sid: str, room: str) -> None:
        connection = self._connections.get(sid)
        if connection is None or room in connection.rooms:
            return
        connection.topics = (*connection.topics, room)
        self._rooms.setdefault(room, set()).add(sid)
        if self.mirror is not None:
            self.mirror.changed(connection)

    def leave(self, sid: str, room: str) -> None:
        connection = self._connections.get(sid)
        if connection is None or room not in connection.topics:
            return  # not in it, or its own user room, which a session never leaves
        connection.topics = tuple(topic for topic in connection.topics if topic != room)
        members = self._rooms.get(room)
        if members is not None:
            members.discard(sid)
            if not members:
                del self._rooms[room]
        if self.mirror is not None:
            self.mirror.changed(connection)

    def heartbeat(self, sid: str) -> float | None:
        connection = self._connections.get(sid)
        if connection is None:
            return None
        connection.last_heartbeat = self._clock()
        if self.mirror is not None:
            self.mirror.touched(connection)
        return connection.last_heartbeat

    def set_transport(self, sid: str, transport: str) -> None:
        connection = self._connections.get(sid)
        if connection is not None and connection.transport != transport:
            connection.transport = transport
            if self.mirror is not None:
                self.mirror.changed(connection)

    def record_event_in(self, sid: str) -> None:
        self.events_in += 1
        connection = self._connections.get(sid)
        if connection is not None:
            connection.events_in += 1

    def record_events_out(self, count: int) -> None:
        self.events_out += count

    def is_online(self, user_id: str) -> bool:
        return bool(self._by_user.get(user_id))

    def user_sessions(self, user_id: str) -> list[ClientConnection]:
        return [self._connections[sid] for sid in sorted(self._by_user.get(user_id, ()))]

    def online_users(self) -> list[str]:
        return sorted(self._by_user)

    def room_members(self, room: str) -> list[str]:
        if room.startswith(USER_PREFIX):
            return sorted(self._by_user.get(room[len(USER_PREFIX) :], ()))
        return sorted(self._rooms.get(room, ()))

    def stale_sessions(self, timeout_seconds: float) -> list[ClientConnection]:
        cutoff = self._clock() - timeout_seconds
        return [c for c in self._connections.values() if c.last_heartbeat < cutoff]

    def all(self) -> list[ClientConnection]:
        return list(self._connections.values())

    def __len__(self) -> int:
        return len(self._connections)

    def counters(self) -> dict[str, Any]:
        """The numbers alone, without a walk over rooms or sessions: what the cluster beat and
        /metrics read every few seconds."""
        return {
            "connections": len(self._connections),
            "online_users": len(self._by_user),
            "room_count": len(self._by_user) + len(self._rooms),
            "events_in": self.events_in,
            "events_out": self.events_out,
            "total_connections": self.total_connections,
            "uptime_seconds": round(self._clock() - self.started_at, 3),
        }

    def transports(self) -> dict[str, int]:
        return dict(Counter(c.transport for c in self._connections.values()))

    def stats(self) -> dict[str, Any]:
        counters = self.counters()
        return {
            "connections": counters["connections"],
            "online_users": counters["online_users"],
            "rooms": dict(
                sorted(
                    [(USER_PREFIX + user, len(sids)) for user, sids in self._by_user.items()]
                    + [(room, len(members)) for room, members in self._rooms.items()]
                )
            ),
            "transports": self.transports(),
            **{name: counters[name] for name in COUNTED},
        }
