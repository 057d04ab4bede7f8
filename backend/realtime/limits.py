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
