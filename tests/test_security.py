"""JWT verification: each way a token can be wrong is refused with its own reason."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from backend.config import Secret, Settings
from backend.security import AuthError, TokenVerifier

SECRET = "s" * 64


def verifier(**overrides: object) -> TokenVerifier:
    settings = Settings(jwt_secret=Secret(SECRET)).with_overrides(**overrides)
    return TokenVerifier(settings)


def encode(payload: dict[str, object], key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=algorithm)


def future() -> int:
    # Made at collection time: a day, not minutes, so a slow suite never reaches them expired.
    return int(time.time()) + 86_400


def test_a_valid_token_gives_its_claims() -> None:
    token = encode(
        {"sub": "alice", "exp": future(), "scope": "notifications:publish", "email": "a@x.io"}
    )
    claims = verifier().verify(token)
    assert claims.sub == "alice"
    assert claims.email == "a@x.io"
    assert claims.has_scope("notifications:publish")
    assert not claims.has_scope("notifications:admin")


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "missing token"),
        ("not-a-jwt", "invalid token: malformed"),
        (
            jwt.encode({"sub": "a", "exp": future()}, None, algorithm="none"),
            "invalid token: algorithm not allowed",
        ),
        (
            encode({"sub": "a", "exp": future()}, key="k" * 64),
            "invalid token: signature verification failed",
        ),
        (encode({"sub": "a", "exp": int(time.time()) - 60}), "token expired"),
        (encode({"sub": "a"}), "invalid token: missing exp"),
        (encode({"exp": future()}), "invalid token: missing sub"),
        (encode({"sub": "", "exp": future()}), "invalid token: sub must be a non-empty string"),
        (
            encode({"sub": "a", "exp": future()}, algorithm="HS512"),
            "invalid token: algorithm not allowed",
        ),
    ],
)
def test_bad_tokens_are_refused_with_their_reason(token: str | None, reason: str) -> None:
    with pytest.raises(AuthError) as caught:
        verifier().verify(token)
    assert caught.value.reason.startswith(reason)


def test_audience_and_issuer_are_checked_when_configured() -> None:
    checked = verifier(jwt_audience="notify", jwt_issuer="https://id.example.com")
    good = encode({"sub": "a", "exp": future(), "aud": "notify", "iss": "https://id.example.com"})
    assert checked.verify(good).sub == "a"
    wrong_aud = encode(
        {"sub": "a", "exp": future(), "aud": "other", "iss": "https://id.example.com"}
    )
    with pytest.raises(AuthError, match="wrong audience"):
        checked.verify(wrong_aud)
    wrong_iss = encode({"sub": "a", "exp": future(), "aud": "notify", "iss": "https://evil"})
    with pytest.raises(AuthError, match="wrong issuer"):
        checked.verify(wrong_iss)
    with pytest.raises(AuthError, match="missing aud"):
        checked.verify(encode({"sub": "a", "exp": future(), "iss": "https://id.example.com"}))


def test_es256_tokens_verify_with_the_public_key_only() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    settings = Settings(jwt_public_key=public_pem, jwt_algorithms=("ES256",))
    es = TokenVerifier(settings)
    token = jwt.encode({"sub": "bob", "exp": future()}, private, algorithm="ES256")
    assert es.verify(token).sub == "bob"
    # An HS256 token signed with the public key as secret (algorithm confusion) is refused.
    confused = jwt.encode({"sub": "bob", "exp": future()}, "p" * 40, algorithm="HS256")
    with pytest.raises(AuthError, match="algorithm not allowed"):
        es.verify(confused)
    assert not es.can_issue


def test_a_verified_token_is_remembered_until_it_expires_and_then_refused() -> None:
    checker = verifier()
    expires = int(time.time()) - 4  # past, but inside the 5 s leeway: still accepted
    token = encode({"sub": "alice", "exp": expires})
    assert checker.verify(token).sub == "alice"
    assert token in checker._verified
    assert checker.verify(token).sub == "alice"  # from the cache
    # A token that differs in its signature is checked in full.
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(AuthError, match="signature"):
        checker.verify(forged)
    time.sleep(max(0.0, expires + 5.2 - time.time()))  # now past exp and the leeway
    with pytest.raises(AuthError, match="token expired"):
        checker.verify(token)
    assert token not in checker._verified
