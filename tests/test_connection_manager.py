"""ConnectionManager and TokenBucket on their own, with a controllable clock."""

from __future__ import annotations

from backend.realtime.connections import ConnectionManager
from backend.realtime.limits import SessionLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_many_sessions_per_user_and_disconnecting_one_of_many() -> None:
    manager = ConnectionManager(clock=Clock())
    manager.connect("s1", "alice", transport="websocket", remote_address="127.0.0.1")
    manager.connect("s2", "alice", transport="polling", user_agent="phone")
    manager.connect("s3", "bob", transport="websocket")
    assert manager.is_online("alice")
    assert [c.sid for c in manager.user_sessions("alice")] == ["s1", "s2"]
    assert manager.online_users() == ["alice", "bob"]
    assert manager.room_members("user:alice") == ["s1", "s2"]
    removed = manager.disconnect("s1")
    assert removed is not None and removed.user_id == "alice"
    assert manager.is_online("alice")
    assert manager.room_members("user:alice") == ["s2"]
    manager.disconnect("s2")
    assert not manager.is_online("alice")
    assert manager.room_members("user:alice") == []
    assert manager.disconnect("s2") is None


def test_rooms_join_and_leave() -> None:
    manager = ConnectionManager(clock=Clock())
    manager.connect("s1", "alice")
    manager.connect("s2", "bob")
    manager.join("s1", "topic:releases")
    manager.join("s2", "topic:releases")
    assert manager.room_members("topic:releases") == ["s1", "s2"]
    manager.leave("s1", "topic:releases")
    assert manager.room_members("topic:releases") == ["s2"]
    assert manager.get("s1") is not None and manager.get("s1").rooms == {"user:alice"}
    manager.disconnect("s2")
    assert manager.room_members("topic:releases") == []
    assert "topic:releases" not in manager.stats()["rooms"]


def test_heartbeat_and_stale_detection_follow_the_clock() -> None:
    clock = Clock()
    manager = ConnectionManager(clock=clock)
    manager.connect("quiet", "alice")
    manager.connect("chatty", "alice")
    clock.now += 200
    assert manager.heartbeat("chatty") == clock.now
    clock.now += 150
    assert [c.sid for c in manager.stale_sessions(300)] == ["quiet"]
    clock.now += 200
    assert {c.sid for c in manager.stale_sessions(300)} == {"quiet", "chatty"}
    assert manager.heartbeat("gone") is None


def test_stats_count_connections_transports_events_and_uptime() -> None:
    clock = Clock()
    manager = ConnectionManager(clock=clock)
    manager.connect("s1", "alice", transport="websocket")
    manager.connect("s2", "alice", transport="polling")
    manager.connect("s3", "bob", transport="websocket")
    manager.record_event_in("s1")
    manager.record_event_in("s1")
    manager.record_events_out(5)
    clock.now += 42
    stats = manager.stats()
    assert stats["connections"] == 3
    assert stats["online_users"] == 2
    assert stats["rooms"] == {"user:alice": 2, "user:bob": 1}
    assert stats["transports"] == {"websocket": 2, "polling": 1}
    assert stats["events_in"] == 2 and stats["events_out"] == 5
    assert stats["uptime_seconds"] == 42
    assert manager.get("s1") is not None and manager.get("s1").events_in == 2


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(10, 20, clock=clock)
    assert sum(bucket.take() for _ in range(25)) == 20
    assert bucket.wait_time() == 0.1
    clock.now += 0.5
    assert sum(bucket.take() for _ in range(10)) == 5


def test_session_limiter_counts_strikes_until_abuse() -> None:
    clock = Clock()
    limiter = SessionLimiter(1, 2, max_strikes=3, clock=clock)
    assert limiter.admit("s") and limiter.admit("s")
    assert not limiter.admit("s") and not limiter.admit("s")
    assert not limiter.abusive("s")
    assert not limiter.admit("s")
    assert limiter.abusive("s")
    clock.now += 1
    assert limiter.admit("s") and not limiter.abusive("s")
