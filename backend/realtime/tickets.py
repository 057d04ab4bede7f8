"""Stream tickets: a browser's EventSource cannot send a bearer token, and a JWT in a URL ends
up in proxies' logs; so it trades its token for a short-lived, single-use ticket instead."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from ..security import TokenClaims

KEY_PREFIX = "notify:sse-ticket:"
TICKET_BYTES = 32  # 43 URL-safe characters
MAX_TICKET_LENGTH = 128


def _key(ticket: str) -> str:
    # Only a digest is kept: whoever reads Redis (or this process's memory) cannot use it.
    return hashlib.sha256(ticket.encode()).hexdigest()


def _dump(claims: TokenClaims) -> str:
    return json.dumps(
        {
            "sub": claims.sub,
            "scopes": sorted(claims.scopes),
            "email": claims.email,
            "name": claims.name,
            "topics": sorted(claims.topics),
            "exp": claims.exp,
        }
    )


def _load(raw: str | bytes) -> TokenClaims:
    data: dict[str, Any] = json.loads(raw)
    return TokenClaims(
        sub=data["sub"],
        scopes=frozenset(data["scopes"]),
        email=data["email"],
        name=data["name"],
        topics=frozenset(data["topics"]),
        exp=data["exp"],
    )


class TicketStore:
    """With Redis, a ticket is a key with a TTL, claimed by an atomic GET+DEL (so exactly one
    claim wins, on whichever process); without Redis, one process, a dict in memory."""

    def __init__(self, *, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._redis: Redis | None = None
        # digest -> (expires at, claims); insertion order is expiry order (one TTL for all)
        self._local: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def use_redis(self, redis: Redis) -> None:
        self._redis = redis

    async def issue(self, claims: TokenClaims) -> str:
        ticket = secrets.token_urlsafe(TICKET_BYTES)
        value = _dump(claims)
        if self._redis is not None:
            ttl_ms = max(int(self.ttl_seconds * 1000), 1)
            await self._redis.set(KEY_PREFIX + _key(ticket), value, px=ttl_ms, nx=True)
            return ticket
        self._purge()
        self._local[_key(ticket)] = (self._clock() + self.ttl_seconds, value)
        return ticket

    async def claim(self, ticket: str) -> TokenClaims | None:
        """The claims the ticket was issued for, once; None when unknown, used or expired."""
        if not ticket or len(ticket) > MAX_TICKET_LENGTH:
            return None
        key = _key(ticket)
        if self._redis is not None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(KEY_PREFIX + key)
                pipe.delete(KEY_PREFIX + key)
                value, deleted = await pipe.execute()
            return _load(value) if deleted == 1 and value is not None else None
        self._purge()
        entry = self._local.pop(key, None)
        if entry is None or entry[0] <= self._clock():
            return None
        return _load(entry[1])

    def _purge(self) -> None:
        """Forget expired tickets, oldest first: memory stays bounded by issues per TTL."""
        now = self._clock()
        while self._local:
            key, (expires, _) = next(iter(self._local.items()))
            if expires > now:
                break
            del self._local[key]
