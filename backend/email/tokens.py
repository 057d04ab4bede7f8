"""Signed one-click unsubscribe links: HS256 with a key derived from the server's secret."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

import jwt

from ..config import Settings
from ..errors import DomainError

PURPOSE = "unsubscribe"
TTL = timedelta(days=90)


class InvalidLink(DomainError):
    """A forged, altered or expired unsubscribe link."""

    code = "invalid_token"
    status = 400


@dataclass(frozen=True, slots=True)
class UnsubscribeScope:
    """Whom and what a link turns off: all email, and/or the listed types."""

    user_id: str
    all_email: bool
    types: tuple[str, ...] = ()


def signing_key(settings: Settings) -> bytes | None:
    """Derived, so an unsubscribe link can never pass as a login token (and the reverse)."""
    secret = settings.unsubscribe_secret or settings.jwt_secret
    if secret is None:
        return None
    return hmac.new(secret.get().encode(), b"email-unsubscribe-v1", hashlib.sha256).digest()


def issue(key: bytes, scope: UnsubscribeScope, *, now: datetime) -> str:
    payload = {
        "sub": scope.user_id,
        "purpose": PURPOSE,
        "all": scope.all_email,
        "types": list(scope.types),
        "iat": int(now.timestamp()),
        "exp": int((now + TTL).timestamp()),
    }
    return jwt.encode(payload, key, algorithm="HS256")


def link(settings: Settings, key: bytes, scope: UnsubscribeScope, *, now: datetime) -> str:
    """The URL for the List-Unsubscribe header and the footer link."""
    query = urlencode({"token": issue(key, scope, now=now)})
    return f"{settings.app_url.rstrip('/')}/api/v1/unsubscribe?{query}"


def verify(key: bytes, token: str) -> UnsubscribeScope:
    try:
        payload = jwt.decode(
            token, key, algorithms=["HS256"], options={"require": ["exp", "sub", "purpose"]}
        )
    except jwt.ExpiredSignatureError:
        raise InvalidLink("this unsubscribe link has expired") from None
    except jwt.PyJWTError:
        raise InvalidLink("this unsubscribe link is not valid") from None
    types = payload.get("types")
    if (
        payload.get("purpose") != PURPOSE
        or not isinstance(payload.get("sub"), str)
        or not isinstance(types, list)
        or not all(isinstance(t, str) for t in types)
    ):
        raise InvalidLink("this unsubscribe link is not valid")
    return UnsubscribeScope(
        user_id=payload["sub"], all_email=bool(payload.get("all")), types=tuple(types)
    )
