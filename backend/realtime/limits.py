"""Token buckets: the one rate-limiting primitive, for events in, notifications out and connects."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens a second, up to `burst`; take() is O(1) and never sleeps."""

    __slots__ = ("_clock", "_stamp", "burst", "rate", "tokens")

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self._clock = clock
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self) -> bool:
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait_time(self) -> float:
        """Seconds until one token is available."""
        self._refill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


class SessionLimiter:
    """A bucket per session, and strikes for sessions that keep pushing past it."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_strikes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_strikes = max_strikes
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._strikes: dict[str, int] = {}

    def admit(self, sid: str) -> bool:
        bucket = self._buckets.get(sid)
        if bucket is None:
            bucket = self._buckets[sid] = TokenBucket(self.rate, self.burst, clock=self._clock)
        if bucket.take():
            self._strikes.pop(sid, None)
            return True
        self._strikes[sid] = self._strikes.get(sid, 0) + 1
        return False

    def abusive(self, sid: str) -> bool:
        """Refused max_strikes times in a row: sustained abuse, not a burst."""
        return self._strikes.get(sid, 0) >= self.max_strikes

    def forget(self, sid: str) -> None:
        self._buckets.pop(sid, None)
        self._strikes.pop(sid, None)


class UserLimiter:
    """A bucket per user: `per_hour` a user, all of them at once at most (GET /me/export).

    Buckets that have refilled are forgotten when there are more than `max_users`, so memory is
    bounded by the users limited within the last hour, not by every user ever seen."""

    def __init__(
        self,
        per_hour: int,
        *,
        max_users: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_hour = per_hour
        self.max_users = max_users
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def admit(self, user_id: str) -> float:
        """0 when admitted, else the seconds until the user may try again."""
        bucket = self._buckets.get(user_id)
        if bucket is None:
            if len(self._buckets) >= self.max_users:
                self._forget_full()
            bucket = TokenBucket(self.per_hour / 3600, self.per_hour, clock=self._clock)
            self._buckets[user_id] = bucket
        if bucket.take():
            return 0.0
        return bucket.wait_time()

    def _forget_full(self) -> None:
        for user_id, bucket in list(self._buckets.items()):
            if bucket.wait_time() == 0 and bucket.tokens >= bucket.burst:
                del self._buckets[user_id]
