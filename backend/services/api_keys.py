"""API keys for services: shown once, stored as a keyed hash, checked against the database on
every request (so a revocation holds at once on every process), last use written throttled.

Why HMAC-SHA256 and not bcrypt: a key is 256 random bits, so nothing can guess it and a slow
hash adds no strength; it would only cost ~100 ms of CPU per request. A keyed hash lets the
database find the row by an index on the hash alone, and a stolen table without API_KEY_SECRET
(or JWT_SECRET) cannot even test a candidate key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..admin_schemas import KeyPermissions
from ..config import Settings
from ..errors import Conflict, Invalid, NotFound
from ..models import ApiKey, utcnow
from ..schemas import isoformat
from ..security import SCOPE_ADMIN, SCOPE_PUBLISH, AuthError, Principal

# Recognisable, so secret scanners (and people) can tell a leaked key at sight.
KEY_PREFIX = "ntfk_"
_KEY_BYTES = 32
# token_urlsafe(32) is 43 characters; anything else cannot be one of ours.
_KEY_LENGTH = len(KEY_PREFIX) + 43
HINT_LENGTH = len(KEY_PREFIX) + 6


def publisher_of(key_id: int) -> str:
    """What `notifications.publisher` records for a key's publishes."""
    return f"key:{key_id}"


def principal_of(key_id: int, permissions: dict[str, Any]) -> Principal:
    rules = KeyPermissions.model_validate(permissions)
    scopes = set()
    if rules.any_user or rules.user_prefixes or rules.topics:
        scopes.add(SCOPE_PUBLISH)
    if rules.admin:
        scopes.add(SCOPE_ADMIN)
    return Principal(
        publisher=publisher_of(key_id),
        scopes=frozenset(scopes),
        topics=frozenset(rules.topics),
        any_user=rules.any_user,
        user_prefixes=tuple(rules.user_prefixes),
        key_id=key_id,
    )


def key_json(row: ApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "hint": row.hint,
        "permissions": row.permissions,
        "created_by": row.created_by,
        "created_at": isoformat(row.created_at),
        "last_used_at": isoformat(row.last_used_at),
    }


class ApiKeys:
    """Create, list, revoke, and authenticate API keys."""

    def __init__(
        self, *, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
    ) -> None:
        self._sessionmaker = sessionmaker
        secret = settings.api_key_secret or settings.jwt_secret
        # Public-key JWTs and no API_KEY_SECRET: a plain SHA-256 (still unguessable keys).
        self._secret = secret.get().encode() if secret is not None else b""
        self._max_keys = settings.api_keys_max
        self._max_rules = settings.api_key_max_rules
        self._touch_seconds = settings.api_key_touch_seconds
        # key id -> when this process last wrote its last_used_at (monotonic)
        self._touched: dict[int, float] = {}

    def hash(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    async def create(
        self, *, name: str, permissions: KeyPermissions, created_by: str | None
    ) -> dict[str, Any]:
        for field in ("topics", "user_prefixes"):
            count = len(getattr(permissions, field))
            if count > self._max_rules:
                message = f"{field} has {count} entries; the limit is {self._max_rules}"
                details = [{"loc": ["permissions", field], "msg": message, "type": "too_long"}]
                raise Invalid(message, details=details)
        if not (permissions.any_user or permissions.user_prefixes or permissions.topics) and (
            not permissions.admin
        ):
            raise Invalid("a key needs at least one permission")
        key = KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)
        async with self._sessionmaker.begin() as session:
            active = await session.scalar(
                select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
            )
            if int(active or 0) >= self._max_keys:
                raise Conflict(
                    f"{self._max_keys} API keys exist (API_KEYS_MAX); revoke one first",
                    details={"limit": self._max_keys},
                )
            row = ApiKey(
                name=name,
                key_hash=self.hash(key),
                hint=key[:HINT_LENGTH],
                permissions=permissions.model_dump(mode="json"),
                created_by=created_by,
                created_at=utcnow(),
            )
            session.add(row)
            await session.flush()
        return {**key_json(row), "key": key}

    async def list(self) -> list[dict[str, Any]]:
        """The keys not revoked (at most API_KEYS_MAX), oldest first."""
        async with self._sessionmaker() as session:
            rows = await session.scalars(
                select(ApiKey).where(ApiKey.revoked_at.is_(None)).order_by(ApiKey.id)
            )
            return [key_json(row) for row in rows]

    async def revoke(self, *, key_id: int) -> None:
        """From the commit on, every process refuses the key (none caches it)."""
        async with self._sessionmaker.begin() as session:
            result = await session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
                .returning(ApiKey.id)
            )
            if result.scalar_one_or_none() is None:
                raise NotFound(f"API key {key_id} not found")
        self._touched.pop(key_id, None)

    async def authenticate(self, key: str) -> Principal:
        """The key's principal; one indexed read per request, no cache to go stale."""
        if not key.startswith(KEY_PREFIX) or len(key) != _KEY_LENGTH:
            raise AuthError("invalid API key")
        async with self._sessionmaker() as session:
            found = (
                await session.execute(
                    select(ApiKey.id, ApiKey.permissions, ApiKey.revoked_at).where(
                        ApiKey.key_hash == self.hash(key)
                    )
                )
            ).one_or_none()
        if found is None:
            raise AuthError("invalid API key")
        key_id, permissions, revoked_at = found
        if revoked_at is not None:
            raise AuthError("API key revoked")
        await self._touch(key_id)
        return principal_of(key_id, permissions)

    async def _touch(self, key_id: int) -> None:
        """Write last_used_at at most once per API_KEY_TOUCH_SECONDS per process: a busy key
        costs reads, not a row write (and its lock) per request."""
        now = time.monotonic()
        last = self._touched.get(key_id)
        if last is not None and now - last < self._touch_seconds:
            return
        if len(self._touched) >= 2 * self._max_keys:
            self._touched.clear()
        self._touched[key_id] = now
        async with self._sessionmaker.begin() as session:
            await session.execute(
                update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow())
            )
