"""JWT issue and verify: the one place that knows about tokens, for HTTP and sockets alike."""

from __future__ import annotations

import binascii
import copy
import time
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import Algorithm
from jwt.api_jws import _BASE64URL_ALPHABET
from jwt.utils import base64url_decode, base64url_encode

from .config import Settings
from .email.schemas import EMAIL_ADDRESS

SCOPE_PUBLISH = "notifications:publish"
SCOPE_ADMIN = "notifications:admin"
EMPTY: frozenset[str] = frozenset()


class AuthError(Exception):
    """A token was refused; str(error) is the reason shown to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TokenClaims:
    sub: str
    scopes: frozenset[str]
    email: str | None = None
    name: str | None = None
    topics: frozenset[str] = frozenset()
    exp: int = 0

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True, slots=True)
class Principal:
    """Who publishes or administers: a token's subject, or an API key (`key:<id>`).

    The same checks apply to both: scopes, then what it may publish to (`authorize_publish`).
    """

    publisher: str
    scopes: frozenset[str]
    # private topics it may publish to (a token's `topics` claim, or the key's list)
    topics: frozenset[str] = frozenset()
    # a publish token may notify every user; a key only if it says so, or by user id prefix
    any_user: bool = True
    user_prefixes: tuple[str, ...] = ()
    key_id: int | None = None

    @property
    def kind(self) -> str:
        """`publisher_kind` of what it publishes: "api_key" or "token"."""
        return "token" if self.key_id is None else "api_key"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @classmethod
    def of_token(cls, claims: TokenClaims) -> Principal:
        return cls(publisher=claims.sub, scopes=claims.scopes, topics=claims.topics)


LEEWAY_SECONDS = 5
VERIFIED_CACHE_MAX = 100_000
# Time claims are seconds since 1970 up to the end of year 9999: anything beyond cannot be a
# real date (a 10^400 `exp` would overflow every float it meets, and never expire).
MAX_TIMESTAMP = 253_402_300_799


class _CheckedJWS(jwt.PyJWS):
    """PyJWT's JWS decoder (PyJWT==2.15.1), its segment check done by bytes.translate.

    PyJWT checks each base64url segment against the alphabet one character at a time in a Python
    generator: a quarter of a token's verification. This is PyJWT's `_decode_base64url_segment`
    with that one test written as a C-level deletion; the same segments are refused with the same
    errors (tests/security/test_jwt_edges.py compares the two on hostile segments).
    """

    @staticmethod
    def _decode_base64url_segment(segment: bytes, name: str) -> bytes:
        padding = 0
        stripped = segment
        while stripped.endswith(b"="):
            stripped = stripped[:-1]
            padding += 1
            if padding > 2:
                raise jwt.DecodeError(f"Invalid {name} padding")
        if padding and len(segment) % 4 != 0:
            raise jwt.DecodeError(f"Invalid {name} padding")
        if len(stripped) % 4 == 1 or stripped.translate(None, _BASE64URL_ALPHABET):
            raise jwt.DecodeError(f"Invalid {name} padding")
        try:
            decoded = base64url_decode(stripped)
        except (TypeError, binascii.Error) as err:
            raise jwt.DecodeError(f"Invalid {name} padding") from err
        if base64url_encode(decoded) != stripped:
            raise jwt.DecodeError(f"Invalid {name} padding")
        return decoded


def _key_prepared_once(algorithm: Algorithm, key: str) -> Algorithm:
    """`algorithm` with `key` prepared at start-up, not on every token: PyJWT prepares the key
    for each decode (for an HMAC secret, four checks that it is no PEM, SSH, DER or JWK key; for
    a public key, parsing its PEM). Any other key is prepared as before."""
    try:
        prepared = algorithm.prepare_key(key)
    except (jwt.PyJWTError, ValueError, TypeError):
        return algorithm  # refused on every token, as before (not a key for this algorithm)
    once = copy.copy(algorithm)

    def prepare_key(candidate: Any) -> Any:
        return prepared if candidate is key else algorithm.prepare_key(candidate)

    once.prepare_key = prepare_key  # type: ignore[method-assign,assignment]
    return once


def _decoder(algorithms: list[str], key: str) -> jwt.PyJWT:
    """A PyJWT decoder of its own: the checked JWS above, the allowed algorithms' key prepared."""
    decoder = jwt.PyJWT()
    jws = _CheckedJWS(algorithms=algorithms, options=decoder._get_sig_options())
    for name in algorithms:
        algorithm = jws.get_algorithm_by_name(name)
        jws.unregister_algorithm(name)
        jws.register_algorithm(name, _key_prepared_once(algorithm, key))
    decoder._jws = jws
    return decoder


class TokenVerifier:
    """Decodes with an explicit algorithm allow-list; exp always required."""

    def __init__(self, settings: Settings) -> None:
        self._algorithms = list(settings.jwt_algorithms)
        symmetric = self._algorithms[0].startswith("HS")
        if symmetric:
            assert settings.jwt_secret is not None
            self._key: str = settings.jwt_secret.get()
        else:
            assert settings.jwt_public_key is not None
            self._key = settings.jwt_public_key
        self._signing_key: str | None = self._key if symmetric else None
        self._decoder = _decoder(self._algorithms, self._key)
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        # Tokens already verified, by their exact text: a publisher sends the same token with
        # every request, a client the same one with every reconnect. Their time limits are
        # checked again on every use; anything else goes through the full check.
        self._verified: dict[str, tuple[TokenClaims, float, float | None]] = {}

    @property
    def can_issue(self) -> bool:
        return self._signing_key is not None

    def verify(self, token: str | None) -> TokenClaims:
        if not token:
            raise AuthError("missing token")
        cached = self._verified.get(token)
        if cached is not None:
            claims, expires, not_before = cached
            now = time.time()
            if now <= expires + LEEWAY_SECONDS and (
                not_before is None or now >= not_before - LEEWAY_SECONDS
            ):
                return claims
            del self._verified[token]
        claims, payload = self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_MAX:
            self._verified.clear()
        # _claims() checked both are in range, so the floats cannot overflow.
        exp, nbf = payload["exp"], payload.get("nbf")
        self._verified[token] = (claims, float(exp), None if nbf is None else float(nbf))
        return claims

    def _verify(self, token: str) -> tuple[TokenClaims, dict[str, Any]]:
        required = ["exp", "sub"]
        if self._audience:
            required.append("aud")
        if self._issuer:
            required.append("iss")
        try:
            payload = self._decoder.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": required, "verify_aud": self._audience is not None},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"invalid token: missing {exc.claim}") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError("invalid token: algorithm not allowed") from None
        except jwt.InvalidSignatureError:
            raise AuthError("invalid token: signature verification failed") from None
        except jwt.InvalidAudienceError:
            raise AuthError("invalid token: wrong audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError("invalid token: wrong issuer") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("invalid token: not yet valid") from None
        except jwt.PyJWTError:
            raise AuthError("invalid token: malformed") from None
        return _claims(payload), payload

    def issue(
        self,
        sub: str,
        *,
        scopes: tuple[str, ...] = (),
        ttl_seconds: int = 86400,
        email: str | None = None,
        name: str | None = None,
        topics: tuple[str, ...] = (),
    ) -> str:
        """Sign a token with the shared secret (HS* only): for the CLI, dev sign-in and tests."""
        if self._signing_key is None:
            raise AuthError("this server only verifies tokens (public key configured)")
        now = int(time.time())
        payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl_seconds}
        if scopes:
            payload["scope"] = " ".join(scopes)
        if email:
            payload["email"] = email
        if name:
            payload["name"] = name
        if topics:
            payload["topics"] = list(topics)
        if self._audience:
            payload["aud"] = self._audience
        if self._issuer:
            payload["iss"] = self._issuer
        return jwt.encode(payload, self._signing_key, algorithm=self._algorithms[0])


def _timestamp(payload: dict[str, Any], claim: str) -> None:
    value = payload.get(claim)
    if value is None and claim != "exp":
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= MAX_TIMESTAMP  # also false for NaN
    ):
        raise AuthError(f"invalid token: {claim} must be a time between 1970 and 9999")


def _claims(payload: dict[str, Any]) -> TokenClaims:
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub.strip() or len(sub) > 255 or "\x00" in sub:
        raise AuthError("invalid token: sub must be a non-empty string of at most 255 characters")
    for claim in ("exp", "nbf", "iat"):
        _timestamp(payload, claim)
    scope = payload.get("scope", payload.get("scp", ""))
    if isinstance(scope, str):
        scopes = scope.split()
    elif isinstance(scope, list):
        scopes = [s for s in scope if isinstance(s, str)]
    else:
        raise AuthError("invalid token: scope must be a string or a list of strings")
    topics = payload.get("topics", [])
    email = payload.get("email")
    if email is not None and (
        not isinstance(email, str) or len(email) > 320 or not EMAIL_ADDRESS.fullmatch(email)
    ):
        # As strict as PUT /admin/users/{id}: "a@x.example, b@y.example" is not one address.
        raise AuthError("invalid token: email must be a single email address")
    name = payload.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 255 or "\x00" in name):
        raise AuthError("invalid token: name must be a string of at most 255 characters")
    # An empty set is the one shared EMPTY (a subscriber's token has neither): each new empty
    # frozenset is 216 bytes, held by every session and the verified-token cache.
    topic_set = (
        frozenset(t for t in topics if isinstance(t, str)) if isinstance(topics, list) else None
    )
    return TokenClaims(
        sub=sub,
        scopes=frozenset(scopes) if scopes else EMPTY,
        email=email,
        name=name,
        topics=topic_set or EMPTY,
        exp=int(payload["exp"]),
    )


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
